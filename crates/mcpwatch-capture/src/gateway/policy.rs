//! Authorization: per-role allow/deny glob patterns over `tool:{server}/{tool}`,
//! `resource:{uri}` and `prompt:{server}/{prompt}`; deny wins.
//!
//! What a server asks of the client is judged too: `sampling:{server}` and
//! `elicitation:{server}`, by explicit deny only ([`Policy::denies_server_request`]), so that a
//! role written before them (`allow = ["tool:**"]`) keeps receiving both, and nothing changes
//! for a policy without such a deny. They may appear only in `deny`.
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
    /// The `sampling:` and `elicitation:` patterns of `deny`.
    deny_server: Vec<Glob>,
}

/// Prefixes of what a server asks of the client, judged by explicit deny only.
const SERVER_REQUEST_KINDS: [&str; 2] = ["sampling:", "elicitation:"];

fn is_server_request(p: &str) -> bool {
    SERVER_REQUEST_KINDS.iter().any(|k| p.starts_with(k))
}

/// Allow/deny patterns per role.
pub struct Policy {
    default_allow: bool,
    roles: HashMap<String, Rules>,
    /// Whether any role denies a server request (else streams are not read for them).
    server_denies: bool,
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
                    let path = format!("gateway.policy.roles.{role}.{what}[{i}]");
                    if what == "allow" && is_server_request(p) {
                        errors.push(ConfigError::at(
                            path,
                            format!("{p:?}: sampling and elicitation are judged by deny only (every role receives them unless a deny names them); remove it from allow"),
                        ));
                    } else if !valid_pattern(p) {
                        errors.push(ConfigError::at(
                            path,
                            format!("{p:?} must start with tool:, resource:, prompt:, sampling: or elicitation: (or be ** for everything)"),
                        ));
                    }
                }
            }
            let (deny_server, deny): (Vec<&String>, Vec<&String>) =
                r.deny.iter().partition(|p| is_server_request(p));
            roles.insert(
                role.clone(),
                Rules {
                    allow: allow.iter().map(|p| compile(p)).collect(),
                    deny: deny.into_iter().map(|p| compile(p)).collect(),
                    deny_server: deny_server.into_iter().map(|p| Glob::new(p)).collect(),
                },
            );
        }
        let server_denies = roles.values().any(|r: &Rules| !r.deny_server.is_empty());
        if errors.is_empty() {
            Ok(Self {
                default_allow,
                roles,
                server_denies,
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

    /// Whether any role denies a server request at all.
    pub fn judges_server_requests(&self) -> bool {
        self.server_denies
    }

    /// The first of `roles` whose deny names `target` (`sampling:{server}` or
    /// `elicitation:{server}`), if one does: what a server asks of the client is refused only
    /// by an explicit deny, whatever `allow` and `default` say.
    pub fn denies_server_request<'a>(&self, roles: &'a [String], target: &str) -> Option<&'a str> {
        if !self.server_denies {
            return None;
        }
        roles
            .iter()
            .find(|r| {
                self.roles
                    .get(*r)
                    .is_some_and(|rules| rules.deny_server.iter().any(|p| p.matches(target)))
            })
            .map(String::as_str)
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
        || is_server_request(p)
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
    fn server_requests_are_refused_by_explicit_deny_only() {
        let p = policy(
            Some("deny"),
            &[
                (
                    "dev",
                    Some(&["tool:**"]),
                    &["sampling:requester", "elicitation:*"],
                ),
                ("ops", Some(&["tool:**"]), &[]),
                ("open", None, &["tool:x/*"]),
            ],
        );
        let roles = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let dev = roles(&["ops", "dev"]);
        assert_eq!(
            p.denies_server_request(&dev, "sampling:requester"),
            Some("dev")
        );
        assert_eq!(p.denies_server_request(&dev, "sampling:other"), None);
        assert_eq!(
            p.denies_server_request(&dev, "elicitation:other"),
            Some("dev")
        );
        // Neither allow, nor `default = "deny"`, nor a deny of tools refuses them.
        for r in [
            roles(&["ops"]),
            roles(&["open"]),
            roles(&["nobody"]),
            roles(&[]),
        ] {
            assert_eq!(
                p.denies_server_request(&r, "sampling:requester"),
                None,
                "{r:?}"
            );
        }
        // The server-request deny does not restrict what the role may use.
        check(&p, &["dev"], "tool:requester/ask_model", true);
        let only = policy(None, &[("dev", None, &["sampling:*"])]);
        assert!(only.unrestricted(&roles(&["dev"])));
    }

    #[test]
    fn bad_patterns_are_reported_with_their_path() {
        let cfg = PolicySection {
            default: Some("maybe".into()),
            roles: [(
                "dev".to_string(),
                RoleRules {
                    allow: Some(vec!["delete_*".into(), "sampling:*".into()]),
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
                "gateway.policy.roles.dev.allow[0]",
                "gateway.policy.roles.dev.allow[1]"
            ]
        );
        assert!(
            errors[2].message.contains("deny only"),
            "{}",
            errors[2].message
        );
    }
}
