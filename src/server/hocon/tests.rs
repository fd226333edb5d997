use super::*;
use proptest::prelude::*;
use serde_json::json;

fn ok(text: &str) -> Value {
    match parse(text) {
        Ok(value) => value,
        Err(err) => panic!("{text:?} failed: {err}"),
    }
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(value) => panic!("{text:?} parsed to {value}"),
        Err(err) => err.to_string(),
    }
}

fn same_as_serde(text: &str) {
    let expected: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok(text), expected, "{text}");
}

#[test]
fn json_documents_parse_like_serde_json() {
    same_as_serde("{}");
    same_as_serde("[]");
    same_as_serde(r#"{"a": 1, "b": [true, false, null], "c": {"d": "e"}}"#);
    same_as_serde(r#"[1, -2, 3.5, -0.25, 1e10, 2E-3, 1.5e+2, 0, -0]"#);
    same_as_serde(r#"[18446744073709551615, -9223372036854775808, 123456789012345678901234]"#);
    same_as_serde(r#"{"s": "q\"b\\s\/b\bf\fn\nr\rt\t u\u00e9 \ud83d\ude00 \u0000"}"#);
    same_as_serde(r#"{"a.b": {"": "empty key"}, "ünï": "çødé 😀"}"#);
    same_as_serde("{\n  \"a\":\n    1,\n  \"b\" : [\n    1,\n    2\n  ]\n}\n");
    same_as_serde("[[[[]]], {}, [{}], \"#not a comment\", \"// nor this\"]");
}

#[test]
fn spark_jobserver_examples() {
    assert_eq!(
        ok(r#"input.string = "a b c a b see""#),
        json!({"input": {"string": "a b c a b see"}})
    );
    let config = r#"
spark.context-settings {
  num-cpu-cores = 2
  memory-per-node = 512m
}
query = "SELECT 1"
partition = "2024-01-01T00:00:00Z"
force = true
"#;
    assert_eq!(
        ok(config),
        json!({
            "spark": {"context-settings": {"num-cpu-cores": 2, "memory-per-node": "512m"}},
            "query": "SELECT 1",
            "partition": "2024-01-01T00:00:00Z",
            "force": true
        })
    );
    let config = r#"input { source = events, app = shop, from = "2024-01-01", to = "2024-01-02" }
keys = [category, city]"#;
    assert_eq!(
        ok(config),
        json!({
            "input": {"source": "events", "app": "shop", "from": "2024-01-01", "to": "2024-01-02"},
            "keys": ["category", "city"]
        })
    );
}

#[test]
fn empty_and_comment_only_documents_are_empty_objects() {
    assert_eq!(ok(""), json!({}));
    assert_eq!(ok(" \n\t\r\n "), json!({}));
    assert_eq!(ok("# nothing\n// here\n"), json!({}));
}

#[test]
fn separators_and_trailing_commas() {
    assert_eq!(ok("a = 1, b : 2\nc { }"), json!({"a": 1, "b": 2, "c": {}}));
    assert_eq!(ok("{a = 1,}"), json!({"a": 1}));
    assert_eq!(ok("a = [1, 2,]"), json!({"a": [1, 2]}));
    assert_eq!(ok("a = [\n  1\n  2\n  , 3\n]"), json!({"a": [1, 2, 3]}));
    assert_eq!(ok("a=1\r\nb=2\r\n"), json!({"a": 1, "b": 2}));
    assert_eq!(ok("a = \n  1"), json!({"a": 1}));
    assert_eq!(ok("\u{feff}{\"bom\": true}"), json!({"bom": true}));
}

#[test]
fn dotted_keys_and_merging() {
    assert_eq!(ok("a.b.c = 1"), json!({"a": {"b": {"c": 1}}}));
    assert_eq!(ok("a.b = 1\na.c = 2"), json!({"a": {"b": 1, "c": 2}}));
    assert_eq!(ok("\"a.b\" = 1"), json!({"a.b": 1}));
    assert_eq!(ok("a.\"b.c\".d = 1"), json!({"a": {"b.c": {"d": 1}}}));
    assert_eq!(
        ok("a { x = 1, n { p = 1 } }\na { y = 2, n { q = 2 } }"),
        json!({"a": {"x": 1, "y": 2, "n": {"p": 1, "q": 2}}})
    );
    assert_eq!(ok("a { x = 1 }\na = 5"), json!({"a": 5}));
    assert_eq!(ok("a = 5\na.b = 1"), json!({"a": {"b": 1}}));
    assert_eq!(ok("a = [1]\na = [2]"), json!({"a": [2]}));
    assert_eq!(
        ok(r#"{"a": {"x": 1}, "a": {"y": 2}}"#),
        json!({"a": {"x": 1, "y": 2}})
    );
    assert_eq!(ok("a = {x = 1} {y = 2}"), json!({"a": {"x": 1, "y": 2}}));
    assert_eq!(ok("a = [1] [2, 3]"), json!({"a": [1, 2, 3]}));
    assert_eq!(
        ok("1.5 = x\ntrue = y"),
        json!({"1": {"5": "x"}, "true": "y"})
    );
    assert_eq!(ok("include = 1"), json!({"include": 1}));
}

#[test]
fn append() {
    assert_eq!(ok("a += 1\na += x"), json!({"a": [1, "x"]}));
    assert_eq!(
        ok("a = [0]\na.b += 1\nc = [0]\nc += 1"),
        json!({"a": {"b": [1]}, "c": [0, 1]})
    );
}

#[test]
fn unquoted_strings_and_concatenation() {
    assert_eq!(ok("a = hello world"), json!({"a": "hello world"}));
    assert_eq!(ok("a = 10 secs"), json!({"a": "10 secs"}));
    assert_eq!(ok("a = 10secs"), json!({"a": "10secs"}));
    assert_eq!(
        ok("a = event  is\tnot null   "),
        json!({"a": "event  is\tnot null"})
    );
    assert_eq!(ok("a = /tmp/x.parquet"), json!({"a": "/tmp/x.parquet"}));
    assert_eq!(
        ok("a = 1.5.3, b = -, c = .5"),
        json!({"a": "1.5.3", "b": "-", "c": ".5"})
    );
    assert_eq!(ok("a = \"x\" y \"z\""), json!({"a": "x y z"}));
    assert_eq!(ok("a = true false"), json!({"a": "true false"}));
    assert_eq!(
        ok("a = \"true\", b = \"1\""),
        json!({"a": "true", "b": "1"})
    );
    assert_eq!(
        ok("a = 1e+5, b = -3, c = yes"),
        json!({"a": 1e5, "b": -3, "c": "yes"})
    );
}

#[test]
fn comments() {
    let text = "# leading\na = 1 # trailing\nb = two words // trailing\n// own line\nc = \"# kept\"\nd = [1, # in array\n 2]";
    assert_eq!(
        ok(text),
        json!({"a": 1, "b": "two words", "c": "# kept", "d": [1, 2]})
    );
    assert_eq!(ok("a = x//y"), json!({"a": "x"}));
}

#[test]
fn triple_quoted_strings() {
    assert_eq!(
        ok("a = \"\"\"line \\n one\n  \"quoted\" line two\"\"\""),
        json!({"a": "line \\n one\n  \"quoted\" line two"})
    );
    assert_eq!(ok("a = \"\"\"x\"\"\"\"\""), json!({"a": "x\"\""}));
    assert_eq!(ok("a = \"\"\"\"\"\""), json!({"a": ""}));
    assert_eq!(ok("a = \"\""), json!({"a": ""}));
}

#[test]
fn error_messages() {
    let cases = [
        (
            "a = 1\nb = 2\nmemory =",
            "line 3, column 9: expected a value after `=`, found end of input",
        ),
        (
            "a = \"abc",
            "line 1, column 9: unterminated string starting at line 1, column 5",
        ),
        (
            "a = 1\nb = \"abc\nc = 2",
            "line 2, column 9: unterminated string starting at line 2, column 5",
        ),
        (
            "{\n  a = 1\n  b = 2\n  ",
            "line 4, column 3: expected `}` to close the object opened at line 1, column 1, found end of input",
        ),
        (
            "a = [1, 2",
            "line 1, column 10: expected `]` to close the array opened at line 1, column 5, found end of input",
        ),
        (
            "a = ${b}",
            "line 1, column 5: substitutions (`${...}`) are not supported",
        ),
        (
            "a = x ${?b}",
            "line 1, column 7: optional substitutions (`${?...}`) are not supported",
        ),
        (
            "a = 1\ninclude \"other.conf\"",
            "line 2, column 1: `include` is not supported",
        ),
        (
            "include required(\"x\")",
            "line 1, column 1: `include` is not supported",
        ),
        (
            "url = http://example.com",
            "line 1, column 11: `:` is not allowed in an unquoted string; put the value in double quotes",
        ),
        (
            "a = what?",
            "line 1, column 9: `?` is not allowed in an unquoted string; put the value in double quotes",
        ),
        (
            "a = {} b = 1",
            "line 1, column 8: expected `,` or newline after the value of `a`, found `b`",
        ),
        (
            "x { a = [] b = 1 }",
            "line 1, column 12: expected `,`, newline or `}` after the value of `a`, found `b`",
        ),
        (
            "a b = 1",
            "line 1, column 3: expected `=`, `:` or `{` after key `a`, found `b`",
        ),
        (
            "a.b. = 1",
            "line 1, column 5: expected a key segment after `.`, found space",
        ),
        (
            "a = 1,\n, b = 2",
            "line 2, column 1: expected a key, found `,`",
        ),
        (
            "{ = 1 }",
            "line 1, column 3: expected a key or `}`, found `=`",
        ),
        (
            "a = [1,,2]",
            "line 1, column 8: expected a value or `]`, found `,`",
        ),
        (
            "a = [1 {}]",
            "line 1, column 8: expected `,`, newline or `]` after an array element, found `{`",
        ),
        ("a = 1\n}", "line 2, column 1: expected a key, found `}`"),
        (
            "a = 1 }",
            "line 1, column 7: expected `,` or newline after the value of `a`, found `}`",
        ),
        (
            "{} x",
            "line 1, column 4: expected end of input after the root object, found `x`",
        ),
        (
            "[1] [2]",
            "line 1, column 5: expected end of input after the root array, found `[`",
        ),
        (
            "a = 1\na += 2",
            "line 2, column 3: cannot append to `a` with `+=`: it holds a number, not an array",
        ),
        (
            "a = \"x\\qy\"",
            "line 1, column 7: invalid escape in a quoted string: `\\` followed by `q`",
        ),
        (
            "a = \"\\u12G4\"",
            "line 1, column 10: expected 4 hex digits after `\\u`, found `G`",
        ),
        (
            "a = \"\\ud800x\"",
            "line 1, column 6: unpaired surrogate `\\uD800` in a unicode escape",
        ),
        (
            "a = \"tab\there\"",
            "line 1, column 9: control character U+0009 must be escaped in a quoted string",
        ),
        (
            "a = \"\"\"never\nclosed",
            "line 2, column 7: unterminated triple-quoted string starting at line 1, column 5",
        ),
        (
            "a = 1e400",
            "line 1, column 5: number `1e400` is out of range",
        ),
        (
            "\"\"\"k\"\"\" = 1",
            "line 1, column 1: a triple-quoted string cannot be a key",
        ),
        (
            "42",
            "line 1, column 3: expected `=`, `:` or `{` after key `42`, found end of input",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(err(text), expected, "input: {text:?}");
    }
}

#[test]
fn errors_repeat_at_most_a_short_piece_of_a_token() {
    let key = "k".repeat(3 << 20);
    let shown = format!("`{}…`", "k".repeat(ECHO_CHARS));
    let digits = "9".repeat(1 << 20);
    for text in [
        key.clone(),
        format!("{key} = 1 2}}"),
        format!("{key} = 1\n{key} += 2"),
        format!("{}b = 1", "a.".repeat(100_000)),
        format!("a = {digits}e999999"),
    ] {
        let message = err(&text);
        assert!(
            message.len() < 300,
            "{} bytes: {}…",
            message.len(),
            &message[..300]
        );
        assert!(message.contains('…'), "{message}");
    }
    assert!(err(&key).contains(&shown), "{}", err(&key));
    // Short tokens are repeated whole.
    assert_eq!(
        err("abc = 1 2}"),
        "line 1, column 10: expected `,` or newline after the value of `abc`, found `}`"
    );
    assert_eq!(echo(&"é".repeat(81)), format!("{}…", "é".repeat(80)));
}

#[test]
fn nesting_is_capped_without_overflowing_the_stack() {
    let ok_depth = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(parse(&ok_depth).is_ok());
    assert_eq!(
        err(&"[".repeat(100_000)),
        "line 1, column 129: nesting deeper than 128 levels is not supported"
    );
    assert!(parse(&"{\"a\":".repeat(100_000)).is_err());
    assert!(parse(&"a {".repeat(100_000)).is_err());
    assert!(parse(&format!("{}b = 1", "a.".repeat(100_000))).is_err());
    let deep_key = format!("{}b = 1", "a.".repeat(MAX_DEPTH - 1));
    assert!(parse(&deep_key).is_ok());
    assert!(parse(&format!("a{deep_key}")).is_ok());
    assert!(parse(&format!("a.{deep_key}")).is_err());
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn serialized_json_round_trips(value in json_value()) {
        // HOCON roots are objects or arrays, so scalars are wrapped.
        let value = if value.is_array() || value.is_object() { value } else { json!([value]) };
        for text in [serde_json::to_string(&value), serde_json::to_string_pretty(&value)] {
            let text = text.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let parsed = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            let expected: Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed, expected);
        }
    }

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse(&text);
    }

    #[test]
    fn hocon_like_text_never_panics(
        text in "[ \t\r\na-z0-9.={}\\[\\],:\"#/+$?\\\\u-]{0,80}"
    ) {
        if let Err(error) = parse(&text) {
            prop_assert!(error.line >= 1 && error.column >= 1);
            prop_assert!(error.line <= text.lines().count() + 1);
        }
    }
}
