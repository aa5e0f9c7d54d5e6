//! The static list of tests (each scenario file declares its tests with
//! [`tests!`](crate::tests)) and how `--filter` selects among them.

pub use crate::test_case::{Test, TestFuture};

/// Every test of the suite, grouped by file in a fixed order.
pub fn all() -> Vec<Test> {
    use crate::scenarios::*;
    [
        versions::TESTS,
        hygiene::TESTS,
        accounts::TESTS,
        tokens::TESTS,
        registration::TESTS,
        ratelimit::TESTS,
        restart::TESTS,
        keys::TESTS,
        groups::TESTS,
        roles::TESTS,
        join_links::TESTS,
        disappearing::TESTS,
        forks::TESTS,
        delivery::TESTS,
        federation::TESTS,
        media::TESTS,
        hostile::TESTS,
    ]
    .concat()
}

/// Whether `pattern` selects `test`: a glob (`*`, `?`) over `group/name`; a pattern without
/// `/` also matches the group name alone, so `--filter accounts` selects a whole group.
pub fn selects(pattern: &str, test: &Test) -> bool {
    glob_match(pattern, &test.full_name())
        || (!pattern.contains('/') && glob_match(pattern, test.group))
}

/// Glob matching with `*` (any run of characters, `/` included) and `?` (one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_stars_and_question_marks() {
        assert!(glob_match("accounts/*", "accounts/login_works"));
        assert!(glob_match(
            "*token*",
            "tokens/expired_access_token_is_unknown"
        ));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(!glob_match("accounts/*", "hygiene/x"));
        assert!(glob_match("*", ""));
        assert!(glob_match("exact/name", "exact/name"));
        assert!(!glob_match("exact/name", "exact/name2"));
    }

    #[test]
    fn test_names_are_unique_and_filterable_by_group() {
        let tests = all();
        let mut names: Vec<String> = tests.iter().map(Test::full_name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate test names");
        assert!(tests.len() >= 75);
        let t = tests[0];
        assert!(selects(t.group, &t));
        assert!(!selects("no-such-group", &t));
    }
}
