//! The dashboard at `/`: [`mcpwatch_web`] over the same reader, alerting service, tokens and
//! rules as the API, mounted once the pipeline runs (its live page subscribes to it).

use std::sync::Arc;

use mcpwatch_alert::Alerting;
use mcpwatch_server::Pipeline;

use super::{Context, RouteFactory, RulesHandle};

/// Pushes the dashboard's route factory.
pub(super) fn build(
    ctx: &Context,
    alerting: Arc<Alerting>,
    rules: RulesHandle,
    routes: &mut Vec<RouteFactory>,
) {
    let (reader, auth, clock) = (ctx.reader.clone(), ctx.auth.clone(), ctx.clock.clone());
    routes.push(Box::new(move |p: &Pipeline| {
        mcpwatch_web::router(mcpwatch_web::WebState::new(
            reader,
            p.clone(),
            alerting,
            auth,
            clock,
            Arc::new(move || rules.describe()),
        ))
    }));
}
