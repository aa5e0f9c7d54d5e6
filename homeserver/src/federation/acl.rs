//! The server ACL in force: the config file's rules (`federation.allow`, `federation.deny`)
//! plus those admins add at runtime, which the database keeps. Every process re-reads the
//! runtime rules every [`RELOAD_EVERY`], so a change made through another process holds
//! everywhere within that time (at once in the process that made it).

use std::sync::RwLock;
use std::time::Duration;

use parley_schema::{AclRule, Store, StoreResult};

use crate::config::FederationConfig;

/// How often the runtime rules are re-read from the database.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// The server ACL: config rules and runtime rules.
#[derive(Debug)]
pub struct ServerAcl {
    config: FederationConfig,
    runtime: RwLock<Runtime>,
}

#[derive(Debug, Default)]
struct Runtime {
    allow: Vec<String>,
    deny: Vec<String>,
}

/// Whether `rule` names a kind of ACL rule.
pub fn is_rule(rule: &str) -> bool {
    matches!(rule, "allow" | "deny")
}

impl ServerAcl {
    /// The ACL of `config`, with no runtime rules yet.
    pub fn new(config: &FederationConfig) -> ServerAcl {
        ServerAcl {
            config: config.clone(),
            runtime: RwLock::new(Runtime::default()),
        }
    }

    /// Whether this server federates with `server_name`, both ways.
    pub fn allows(&self, server_name: &str) -> bool {
        let runtime = self.runtime.read().unwrap_or_else(|p| p.into_inner());
        self.config
            .allows_with(&runtime.allow, &runtime.deny, server_name)
    }

    /// The config file's allow and deny rules.
    pub fn config_rules(&self) -> (&[String], &[String]) {
        (&self.config.allow, &self.config.deny)
    }

    /// Replaces the runtime rules.
    pub fn set_runtime(&self, rules: &[AclRule]) {
        let mut runtime = Runtime::default();
        for r in rules {
            match r.rule.as_str() {
                "allow" => runtime.allow.push(r.pattern.clone()),
                "deny" => runtime.deny.push(r.pattern.clone()),
                _ => {}
            }
        }
        *self.runtime.write().unwrap_or_else(|p| p.into_inner()) = runtime;
    }

    /// Re-reads the runtime rules from the database.
    pub async fn reload(&self, store: &Store) -> StoreResult<()> {
        let rules = store.admin().acl_rules().await?;
        self.set_runtime(&rules);
        Ok(())
    }
}

/// Re-reads the runtime rules now and then every [`RELOAD_EVERY`], forever (spawned at
/// start-up).
pub async fn keep_loaded(acl: std::sync::Arc<ServerAcl>, store: Store) {
    let mut ticker = tokio::time::interval(RELOAD_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = acl.reload(&store).await {
            tracing::warn!(error = %e, "cannot read the runtime server ACL; keeping the last one");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, rule: &str) -> AclRule {
        AclRule {
            pattern: pattern.into(),
            rule: rule.into(),
            created_ts: 0,
        }
    }

    #[test]
    fn runtime_rules_add_to_the_config_rules() {
        let config = FederationConfig {
            deny: vec!["evil.example".into()],
            ..FederationConfig::default()
        };
        let acl = ServerAcl::new(&config);
        assert!(acl.allows("b.example") && !acl.allows("evil.example"));
        acl.set_runtime(&[rule("*.spam.example", "deny")]);
        assert!(!acl.allows("x.spam.example") && acl.allows("b.example"));
        // One runtime allow rule turns the ACL into an allow-list.
        acl.set_runtime(&[rule("b.example", "allow")]);
        assert!(acl.allows("b.example") && !acl.allows("c.example"));
        assert!(!acl.allows("evil.example"));
        acl.set_runtime(&[]);
        assert!(acl.allows("c.example"));
    }
}
