//! Authorization: per-role allow/deny glob patterns over `tool:{server}/{tool}`,
//! `resource:{uri}` and `prompt:{server}/{prompt}`; deny wins.
//!
//! Patterns are [`Glob`]s, compiled once: `*` stays within a `/` segment, `**` crosses them, so
//! `tool:**` is every tool and `tool:filesystem/delete_*` one server's deleting tools.
//! A principal may use a target when none of its roles denies it and at least one allows it;
//! a principal none of whose roles has rules gets the policy's `default`.
//!
//! Resource URIs are judged in their canonical spelling ([`crate::uri`]), patterns too, so
//! `file:///tmp/../etc/passwd` is `file:///etc/passwd` to `resource:file:///etc/**`; a URI
//! without one is refused to every principal that policy restricts.

use std::collections::HashMap;

use mcpwatch_core::config::ConfigError;

use super::config::PolicySection;
use crate::classify::Glob;
use crate::uri::{self, UriError};

struct Rules {
    allow: Vec<Glob>,
    deny: Vec<Glob>,
}

/// Allow/deny patterns per role.
pub struct Policy {
    default_allow: bool,
    roles: HashMap<String, Rules>,
}

impl Policy {
    /// Builds from `[gateway.policy]`; every error at once.
    pub fn build(cfg: &PolicySection) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let default_allow = match cfg.default.as_deref() {
            None | Some("allow") => true,
            Some("deny") => false,
            Some(other) => {
                errors.push(ConfigError::at(
                    "gateway.policy.default",
                    format!("{other:?}: write \"allow\" or \"deny\""),
                ));
                true
            }
        };
        let mut roles = HashMap::new();
        for (role, r) in &cfg.roles {
            let allow = r.allow.clone().unwrap_or_else(|| vec!["**".into()]);
            for (list, what) in [(&allow, "allow"), (&r.deny, "deny")] {
                for (i, p) in list.iter().enumerate() {
                    if !valid_pattern(p) {
                        errors.push(ConfigError::at(
                            format!("gateway.policy.roles.{role}.{what}[{i}]"),
                            format!("{p:?} must start with tool:, resource: or prompt: (or be ** for everything)"),
                        ));
                    }
                }
            }
            roles.insert(
                role.clone(),
                Rules {
                    allow: allow.iter().map(|p| compile(p)).collect(),
                    deny: r.deny.iter().map(|p| compile(p)).collect(),
                },
            );
        }
        if errors.is_empty() {
            Ok(Self {
                default_allow,
                roles,
            })
        } else {
            Err(errors)
        }
    }

    /// Whether a principal with `roles` may use `target` (e.g. `tool:everything/echo`); a
    /// resource without a canonical spelling is refused (see [`Policy::verdict`]).
    pub fn permits(&self, roles: &[String], target: &str) -> bool {
        self.verdict(roles, target).unwrap_or(false)
    }

    /// Whether a principal with `roles` may use `target`, or, for a resource URI that has no
    /// canonical spelling, why policy cannot judge it (only for principals it restricts).
    pub fn verdict(&self, roles: &[String], target: &str) -> Result<bool, UriError> {
        let canonical;
        let target = match target.strip_prefix("resource:") {
            Some(u) if !self.unrestricted(roles) => {
                canonical = format!("resource:{}", uri::normalize(u)?);
                canonical.as_str()
            }
            _ => target,
        };
        Ok(self.matches(roles, target))
    }

    fn matches(&self, roles: &[String], target: &str) -> bool {
        let mut ruled = false;
        let mut allowed = false;
        for rules in roles.iter().filter_map(|r| self.roles.get(r)) {
            ruled = true;
            if rules.deny.iter().any(|p| p.matches(target)) {
                return false;
            }
            allowed |= rules.allow.iter().any(|p| p.matches(target));
        }
        if ruled {
            allowed
        } else {
            self.default_allow
        }
    }

    /// Whether every target is allowed for these roles (lets list filtering be skipped).
    pub fn unrestricted(&self, roles: &[String]) -> bool {
        let ruled: Vec<&Rules> = roles.iter().filter_map(|r| self.roles.get(r)).collect();
        if ruled.is_empty() {
            return self.default_allow;
        }
        ruled.iter().all(|r| r.deny.is_empty())
            && ruled
                .iter()
                .any(|r| r.allow.iter().any(|p| p.as_str() == "**"))
    }
}

/// A pattern, a resource pattern in the canonical spelling of its URI when it has one.
fn compile(p: &str) -> Glob {
    match p.strip_prefix("resource:").map(uri::normalize) {
        Some(Ok(canonical)) => Glob::new(&format!("resource:{canonical}")),
        _ => Glob::new(p),
    }
}

fn valid_pattern(p: &str) -> bool {
    p == "**"
        || ["tool:", "resource:", "prompt:"]
            .iter()
            .any(|k| p.starts_with(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::config::RoleRules;

    /// A role: name, allow patterns (None: default), deny patterns.
    type RoleSpec<'a> = (&'a str, Option<&'a [&'a str]>, &'a [&'a str]);

    fn policy(default: Option<&str>, roles: &[RoleSpec<'_>]) -> Policy {
        let cfg = PolicySection {
            default: default.map(str::to_string),
            roles: roles
                .iter()
                .map(|(name, allow, deny)| {
                    (
                        name.to_string(),
                        RoleRules {
                            allow: allow.map(|a| a.iter().map(|s| s.to_string()).collect()),
                            deny: deny.iter().map(|s| s.to_string()).collect(),
                        },
                    )
                })
                .collect(),
        };
        Policy::build(&cfg).expect("valid policy")
    }

    fn check(p: &Policy, roles: &[&str], target: &str, expected: bool) {
        let roles: Vec<String> = roles.iter().map(|s| s.to_string()).collect();
        assert_eq!(p.permits(&roles, target), expected, "{roles:?} on {target}");
    }

    #[test]
    fn deny_wins_and_unruled_principals_get_the_default() {
        let p = policy(
            Some("deny"),
            &[
                (
                    "dev",
                    None,
                    &["tool:filesystem/delete_*", "resource:file:///etc/**"],
                ),
                ("reader", Some(&["tool:*/read_*", "resource:**"]), &[]),
            ],
        );
        check(&p, &["dev"], "tool:filesystem/read_file", true);
        check(&p, &["dev"], "tool:filesystem/delete_file", false);
        check(&p, &["dev", "reader"], "tool:filesystem/delete_file", false);
        check(&p, &["dev"], "resource:file:///etc/ssh/sshd_config", false);
        for spelling in [
            "file:///tmp/../etc/passwd",
            "file:////etc/passwd",
            "file:///%65tc/passwd",
            "FILE:///etc/passwd",
            "file://localhost/etc/passwd",
            "file:///./etc/passwd",
            "file:/etc/passwd",
        ] {
            check(&p, &["dev"], &format!("resource:{spelling}"), false);
            check(&p, &["reader"], &format!("resource:{spelling}"), true);
        }
        let roles = ["dev".to_string()];
        assert_eq!(
            p.verdict(&roles, "resource:file:///etc%2Fpasswd"),
            Err(UriError::StructuralEscape("/", b'/'))
        );
        check(&p, &["dev"], "resource:file:///etc%2Fpasswd", false);
        check(&p, &["reader"], "tool:filesystem/read_file", true);
        check(&p, &["reader"], "tool:filesystem/write_file", false);
        check(&p, &["nobody"], "tool:filesystem/read_file", false);
        check(&p, &[], "tool:x/y", false);
        assert!(!p.unrestricted(&["dev".into()]));
        let open = policy(None, &[]);
        check(&open, &["anyone"], "tool:x/y", true);
        assert!(open.unrestricted(&[]));
    }

    #[test]
    fn bad_patterns_are_reported_with_their_path() {
        let cfg = PolicySection {
            default: Some("maybe".into()),
            roles: [(
                "dev".to_string(),
                RoleRules {
                    allow: Some(vec!["delete_*".into()]),
                    deny: vec![],
                },
            )]
            .into(),
        };
        let errors = Policy::build(&cfg).err().expect("invalid");
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "gateway.policy.default",
                "gateway.policy.roles.dev.allow[0]"
            ]
        );
    }
}
