//! The TOML config a self-started server gets: the suite's base plus a test's snippet.

/// What every self-started server runs with unless a test overrides it: quiet logs and rate
/// limits high enough that only the rate-limit tests meet them.
pub const BASE_CONFIG: &str = r#"
[log]
level = "warn"

[rate_limits]
login = { per_second = 1000.0, burst = 1000 }
register = { per_second = 1000.0, burst = 1000 }
"#;

/// Merges TOML snippets in order: tables merge key by key, later values replace earlier ones.
pub fn merge(snippets: &[&str]) -> anyhow::Result<String> {
    let mut merged = toml::Table::new();
    for (i, snippet) in snippets.iter().enumerate() {
        let table: toml::Table = snippet
            .parse()
            .map_err(|e| anyhow::anyhow!("config snippet {i} is not valid TOML: {e}"))?;
        merge_into(&mut merged, table);
    }
    Ok(toml::to_string(&merged)?)
}

fn merge_into(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) => merge_into(old, new),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_override_the_base_key_by_key() {
        let text = merge(&[
            BASE_CONFIG,
            "[rate_limits]\nlogin = { per_second = 0.01, burst = 3 }\n[auth]\naccess_token_ttl_ms = 1500",
        ])
        .unwrap();
        let t: toml::Table = text.parse().unwrap();
        assert_eq!(t["rate_limits"]["login"]["burst"].as_integer(), Some(3));
        assert_eq!(
            t["rate_limits"]["register"]["burst"].as_integer(),
            Some(1000)
        );
        assert_eq!(t["auth"]["access_token_ttl_ms"].as_integer(), Some(1500));
        assert_eq!(t["log"]["level"].as_str(), Some("warn"));
    }

    #[test]
    fn invalid_snippets_are_errors() {
        assert!(merge(&["[limits\n"]).is_err());
    }
}
