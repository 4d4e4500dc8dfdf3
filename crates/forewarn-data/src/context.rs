//! Context channels: the columns (setpoints, commands, operating modes)
//! that a model reads as inputs but never forecasts, scores or alarms on,
//! chosen by name with `*` / `?` globs (`--context-columns 'cmd*'`,
//! model.toml's `[model] context`).

use crate::error::DataError;

/// Whether `name` matches `pattern`: `*` matches any run of characters
/// (none included), `?` exactly one, everything else itself
/// (case-sensitive, as column names are).
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // The last `*` seen and the name position it was tried at: on a
    // mismatch, let that star swallow one more character (linear
    // backtracking, no recursion).
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Which of `channels` are context channels under `globs` (`true` at
/// their positions, in the channels' order). A glob that matches no
/// channel is an error naming it (a typo would otherwise silently monitor
/// a command), and so is every channel being context (nothing left to
/// monitor). `source` names the data in the message.
pub fn context_flags(
    channels: &[String],
    globs: &[String],
    source: &str,
) -> Result<Vec<bool>, DataError> {
    let mut flags = vec![false; channels.len()];
    for g in globs {
        let mut any = false;
        for (flag, name) in flags.iter_mut().zip(channels) {
            if glob_matches(g, name) {
                *flag = true;
                any = true;
            }
        }
        if !any {
            return Err(DataError::data(
                source,
                format!(
                    "context column glob {g:?} matches no column (columns: {})",
                    channels.join(", ")
                ),
            ));
        }
    }
    if !channels.is_empty() && flags.iter().all(|f| *f) {
        return Err(DataError::data(
            source,
            format!("every column is a context column under {globs:?}: nothing is left to monitor"),
        ));
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_as_a_table_says() {
        for (pattern, name, want) in [
            ("cmd*", "cmd1", true),
            ("cmd*", "cmd", true),
            ("cmd*", "xcmd1", false),
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "a", false),
            ("cmd?", "cmd1", true),
            ("cmd?", "cmd12", false),
            ("cmd??", "cmd12", true),
            ("*_sp", "flow_sp", true),
            ("*_sp", "flow_sp2", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("a*b", "abab", true),
            ("*a*", "bab", true),
            ("**", "x", true),
            ("valve", "valve", true),
            ("valve", "Valve", false),
            ("?", "é", true),
        ] {
            assert_eq!(glob_matches(pattern, name), want, "{pattern:?} vs {name:?}");
        }
    }

    #[test]
    fn context_flags_keep_the_order_and_refuse_empty_globs_and_all_context() {
        let ch: Vec<String> = ["value", "cmd1", "flow", "cmd2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let f = context_flags(&ch, &["cmd*".into()], "x.csv").unwrap();
        assert_eq!(f, vec![false, true, false, true]);
        let f = context_flags(&ch, &["cmd2".into(), "flo?".into()], "x.csv").unwrap();
        assert_eq!(f, vec![false, false, true, true]);
        assert_eq!(context_flags(&ch, &[], "x.csv").unwrap(), vec![false; 4]);
        let e = context_flags(&ch, &["cmnd*".into()], "x.csv")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"cmnd*\" matches no column") && e.contains("x.csv"),
            "{e}"
        );
        let e = context_flags(&ch, &["*".into()], "x.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nothing is left to monitor"), "{e}");
    }
}
