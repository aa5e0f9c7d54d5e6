//! Server command templates: `--server-cmd "my-server --port-file … {listen} …"`.
//!
//! A template is split into words like a shell would (single and double quotes group, a
//! backslash escapes the next character outside single quotes), but no shell runs: the first
//! word is the program. Placeholders are replaced inside every word after splitting, so values
//! with spaces stay one argument.

/// The default template: this repository's `parley` binary.
pub const DEFAULT_TEMPLATE: &str = "{parley} serve --config {config} --server-name {server_name} --listen {listen} --database {database} --data-dir {data_dir}";

/// The placeholders a template may use, with what they stand for.
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    (
        "{parley}",
        "the parley binary next to the sytest executable",
    ),
    (
        "{config}",
        "path of a TOML config file (Parley's format) written for this instance",
    ),
    ("{server_name}", "the instance's server name, e.g. hs1.test"),
    (
        "{listen}",
        "address to bind: 127.0.0.1:0 (any free port); on restart the previous address",
    ),
    (
        "{database}",
        "sqlite://<data_dir>/parley.db or a fresh postgres://… database",
    ),
    (
        "{data_dir}",
        "an empty temporary directory, kept across restarts of the instance",
    ),
];

/// Splits a template into words; an unterminated quote is an error.
pub fn split_words(template: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return Err("unterminated ' in server command".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => current.push(c),
                            None => return Err("trailing \\ in server command".into()),
                        },
                        Some(c) => current.push(c),
                        None => return Err("unterminated \" in server command".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => current.push(c),
                    None => return Err("trailing \\ in server command".into()),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                current.push(c);
            }
        }
    }
    if in_word {
        words.push(current);
    }
    if words.is_empty() {
        return Err("empty server command".into());
    }
    Ok(words)
}

/// Replaces every `{name}` of `values` in each word.
pub fn substitute(words: &[String], values: &[(&str, &str)]) -> Vec<String> {
    words
        .iter()
        .map(|w| {
            values
                .iter()
                .fold(w.clone(), |acc, (name, value)| acc.replace(name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_split_on_white_space_and_group_quotes() {
        assert_eq!(
            split_words(r#"srv --a 'b c' "d \"e\"" f\ g"#).unwrap(),
            ["srv", "--a", "b c", "d \"e\"", "f g"]
        );
        assert!(split_words("srv 'open").is_err());
        assert!(split_words("   ").is_err());
        assert_eq!(split_words("x ''").unwrap(), ["x", ""]);
    }

    #[test]
    fn placeholders_are_replaced_inside_words() {
        let words = split_words("run --db={database} {data_dir}").unwrap();
        let out = substitute(
            &words,
            &[("{database}", "sqlite:///t/p.db"), ("{data_dir}", "/t d")],
        );
        assert_eq!(out, ["run", "--db=sqlite:///t/p.db", "/t d"]);
    }

    #[test]
    fn the_default_template_only_uses_documented_placeholders() {
        let words = split_words(DEFAULT_TEMPLATE).unwrap();
        let values: Vec<(&str, &str)> = PLACEHOLDERS.iter().map(|(p, _)| (*p, "X")).collect();
        assert!(substitute(&words, &values).iter().all(|w| !w.contains('{')));
    }
}
