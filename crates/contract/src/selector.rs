//! Kubernetes label selectors (`team=a,tier in (web,db),!legacy`): parsed
//! once, then judged against labels already at hand, so a cache answers
//! "which namespaces match" without asking the API server again.
//!
//! The grammar is apimachinery's `labels.Parse`: requirements joined by
//! commas, each one of `key`, `!key`, `key=v`, `key==v`, `key!=v`,
//! `key in (v,…)`, `key notin (v,…)`, `key>n`, `key<n`. As there, `!=` and
//! `notin` also match objects without the key, and the empty selector
//! matches everything. kube-core can match a selector but not parse one.

use std::collections::BTreeMap;
use std::fmt;

/// A parsed label selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Requirement {
    key: String,
    op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Op {
    Exists,
    DoesNotExist,
    In(Vec<String>),
    NotIn(Vec<String>),
    Greater(i64),
    Less(i64),
}

/// Why a selector was refused, naming the part at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for ParseError {}

fn error(message: impl Into<String>) -> ParseError {
    ParseError(message.into())
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Comma,
    Open,
    Close,
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    Greater,
    Less,
}

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            ',' | '(' | ')' | '>' | '<' => {
                chars.next();
                tokens.push(match c {
                    ',' => Token::Comma,
                    '(' => Token::Open,
                    ')' => Token::Close,
                    '>' => Token::Greater,
                    _ => Token::Less,
                });
            }
            '=' => {
                chars.next();
                if chars.next_if_eq(&'=').is_some() {
                    tokens.push(Token::DoubleEquals);
                } else {
                    tokens.push(Token::Equals);
                }
            }
            '!' => {
                chars.next();
                if chars.next_if_eq(&'=').is_some() {
                    tokens.push(Token::NotEquals);
                } else {
                    tokens.push(Token::Not);
                }
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || ",()=!<>".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    Ok(tokens)
}

impl std::str::FromStr for Selector {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, ParseError> {
        let tokens = lex(text)?;
        let mut parser = Parser {
            tokens: &tokens,
            at: 0,
        };
        let mut requirements = Vec::new();
        if tokens.is_empty() {
            return Ok(Selector { requirements });
        }
        loop {
            requirements.push(parser.requirement()?);
            match parser.next() {
                None => break,
                Some(Token::Comma) => {}
                Some(other) => {
                    return Err(error(format!(
                        "expected a comma between requirements, found {}",
                        describe(other)
                    )));
                }
            }
        }
        Ok(Selector { requirements })
    }
}

struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
}

fn describe(token: &Token) -> String {
    match token {
        Token::Word(w) => format!("{w:?}"),
        Token::Comma => "','".into(),
        Token::Open => "'('".into(),
        Token::Close => "')'".into(),
        Token::Not => "'!'".into(),
        Token::Equals => "'='".into(),
        Token::DoubleEquals => "'=='".into(),
        Token::NotEquals => "'!='".into(),
        Token::Greater => "'>'".into(),
        Token::Less => "'<'".into(),
    }
}

impl Parser<'_> {
    fn next(&mut self) -> Option<&Token> {
        let token = self.tokens.get(self.at);
        self.at += 1;
        token
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn key(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Some(Token::Word(word)) => {
                let key = word.clone();
                check_key(&key)?;
                Ok(key)
            }
            Some(other) => Err(error(format!(
                "expected a label key, found {}",
                describe(other)
            ))),
            None => Err(error("expected a label key, found the end")),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, ParseError> {
        if self.peek() == Some(&Token::Not) {
            self.next();
            let key = self.key()?;
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
            });
        }
        let key = self.key()?;
        let op = match self.peek() {
            None | Some(Token::Comma) => Op::Exists,
            Some(Token::Equals | Token::DoubleEquals) => {
                self.next();
                Op::In(vec![self.value(&key)?])
            }
            Some(Token::NotEquals) => {
                self.next();
                Op::NotIn(vec![self.value(&key)?])
            }
            Some(Token::Greater | Token::Less) => {
                let greater = self.next() == Some(&Token::Greater);
                let value = self.value(&key)?;
                let n: i64 = value.parse().map_err(|_| {
                    error(format!("{key}: '>' and '<' take an integer, not {value:?}"))
                })?;
                if greater { Op::Greater(n) } else { Op::Less(n) }
            }
            Some(Token::Word(word)) if word == "in" || word == "notin" => {
                let negated = word == "notin";
                self.next();
                let values = self.set(&key)?;
                if negated {
                    Op::NotIn(values)
                } else {
                    Op::In(values)
                }
            }
            Some(other) => {
                return Err(error(format!(
                    "{key}: expected '=', '==', '!=', 'in', 'notin', '>', '<' or a comma, found {}",
                    describe(other)
                )));
            }
        };
        Ok(Requirement { key, op })
    }

    /// A value, which may be empty (`team=`).
    fn value(&mut self, key: &str) -> Result<String, ParseError> {
        let value = match self.peek() {
            Some(Token::Word(word)) => {
                let value = word.clone();
                self.next();
                value
            }
            _ => String::new(),
        };
        check_value(key, &value)?;
        Ok(value)
    }

    fn set(&mut self, key: &str) -> Result<Vec<String>, ParseError> {
        if self.next() != Some(&Token::Open) {
            return Err(error(format!(
                "{key}: 'in' and 'notin' take a list in parentheses"
            )));
        }
        let mut values = Vec::new();
        loop {
            values.push(self.value(key)?);
            match self.next() {
                Some(Token::Comma) => {}
                Some(Token::Close) => break,
                _ => {
                    return Err(error(format!(
                        "{key}: the list of values is not closed with ')'"
                    )));
                }
            }
        }
        Ok(values)
    }
}

fn is_name(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|part| {
            let bytes = part.as_bytes();
            !bytes.is_empty()
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        })
}

fn check_key(key: &str) -> Result<(), ParseError> {
    let valid = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name(name),
        None => is_name(key),
    };
    if valid {
        Ok(())
    } else {
        Err(error(format!(
            "{key:?} is not a label key (a name of up to 63 letters, digits, '-', '_' or '.', optionally after a DNS prefix and '/')"
        )))
    }
}

fn check_value(key: &str, value: &str) -> Result<(), ParseError> {
    if value.is_empty() || is_name(value) {
        Ok(())
    } else {
        Err(error(format!(
            "{key}: {value:?} is not a label value (up to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)"
        )))
    }
}

impl Selector {
    /// Whether labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| {
            let value = labels.get(&r.key);
            match &r.op {
                Op::Exists => value.is_some(),
                Op::DoesNotExist => value.is_none(),
                Op::In(values) => value.is_some_and(|v| values.contains(v)),
                Op::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
                Op::Greater(n) => value
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v > *n),
                Op::Less(n) => value
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|v| v < *n),
            }
        })
    }

    /// Whether it selects everything.
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// The canonical text, which the API server parses to the same selector.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let key = &r.key;
            match &r.op {
                Op::Exists => write!(f, "{key}")?,
                Op::DoesNotExist => write!(f, "!{key}")?,
                Op::In(values) if values.len() == 1 => write!(f, "{key}={}", values[0])?,
                Op::NotIn(values) if values.len() == 1 => write!(f, "{key}!={}", values[0])?,
                Op::In(values) => write!(f, "{key} in ({})", values.join(","))?,
                Op::NotIn(values) => write!(f, "{key} notin ({})", values.join(","))?,
                Op::Greater(n) => write!(f, "{key}>{n}")?,
                Op::Less(n) => write!(f, "{key}<{n}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(text: &str) -> Selector {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn every_form_matches_as_the_api_server_does() {
        let web = labels(&[
            ("team", "a"),
            ("tier", "web"),
            ("size", "3"),
            ("kdev.dev/environment", ""),
        ]);
        let cases = [
            ("", true),
            ("team", true),
            ("!team", false),
            ("!legacy", true),
            ("team=a", true),
            ("team==a", true),
            ("team!=a", false),
            ("legacy!=x", true),
            ("tier in (web, db)", true),
            ("tier notin (web,db)", false),
            ("legacy notin (x)", true),
            ("legacy in (x)", false),
            ("size>2", true),
            ("size<3", false),
            ("team=a,tier=db", false),
            ("team = a , tier in (web)", true),
            ("kdev.dev/environment", true),
            ("kdev.dev/environment=", true),
            ("team=", false),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text).matches(&web), expected, "{text}");
        }
    }

    #[test]
    fn bad_selectors_name_what_is_wrong() {
        for (text, says) in [
            ("team in a", "parentheses"),
            ("team in (a", "closed"),
            ("team=a b", "comma"),
            ("=a", "label key"),
            ("team=a,", "the end"),
            ("size>x", "integer"),
            ("Bad_/x", "label key"),
            ("team=-a", "label value"),
            ("team ~ a", "expected"),
        ] {
            let err = text.parse::<Selector>().expect_err(text).to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn the_text_it_prints_parses_back_the_same() {
        for text in [
            "a,!b,c=d,e!=f,g in (h,i),j notin (k),l>1,m<2",
            "x.io/y=",
            "",
        ] {
            let selector = parse(text);
            assert_eq!(parse(&selector.to_string()), selector);
        }
    }

    proptest! {
        #[test]
        fn any_text_is_an_error_or_a_selector_never_a_panic(text in ".{0,80}") {
            if let Ok(selector) = text.parse::<Selector>() {
                let again: Selector = selector.to_string().parse().expect("printed form parses");
                prop_assert_eq!(again, selector);
            }
        }

        #[test]
        fn selector_shaped_text_is_an_error_or_a_selector(
            text in "[a-z!=(), ]{0,12}(in|notin)?[a-z0-9.=/!(), <>-]{0,30}"
        ) {
            let _ = text.parse::<Selector>();
        }
    }
}
