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
            "a = x ${?b}",
            "line 1, column 7: `${?b}`: environment lookups are not supported: a posted config \
             must not read the server's environment",
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

#[test]
fn a_lone_substitution_keeps_the_type_of_what_it_names() {
    let config = r#"
n = 2
s = text
t = true
z = null
o { x = 1, y = [a, b] }
l = [1, {k = v}]
"a.b" = quoted
copies {
  n = ${n}, s = ${s}, t = ${t}, z = ${z}, o = ${o}, l = ${l}
  x = ${o.x}, y = ${o.y}, q = ${"a.b"}
}
"#;
    assert_eq!(
        ok(config)["copies"],
        json!({
            "n": 2, "s": "text", "t": true, "z": null, "o": {"x": 1, "y": ["a", "b"]},
            "l": [1, {"k": "v"}], "x": 1, "y": ["a", "b"], "q": "quoted"
        })
    );
    // Whitespace around a lone substitution does not make it a string.
    assert_eq!(ok("a = 1\nb =   ${a}   \n"), json!({"a": 1, "b": 1}));
    assert_eq!(ok("a = 1\nb = ${ a }"), json!({"a": 1, "b": 1}));
    // The path is absolute, wherever the substitution is.
    assert_eq!(
        ok("a = 1\nx { a = 2, b = ${a}, c = ${x.a} }"),
        json!({"a": 1, "x": {"a": 2, "b": 1, "c": 2}})
    );
    // In arrays, in objects in arrays, in appended values.
    assert_eq!(
        ok("a = 1\nl = [${a}, [${a}], {b = ${a}}]\nm += ${a}\nm += {c = ${a}}"),
        json!({"a": 1, "l": [1, [1], {"b": 1}], "m": [1, {"c": 1}]})
    );
    // A root array may hold substitutions, though they can name nothing.
    assert_eq!(ok("[1, [2]] "), json!([1, [2]]));
}

#[test]
fn substitutions_see_the_final_value_after_all_merging() {
    // Forward references, and the latest definition wins.
    assert_eq!(ok("b = ${a}\na = 1"), json!({"b": 1, "a": 1}));
    assert_eq!(ok("a = 1\nb = ${a}\na = 2"), json!({"a": 2, "b": 2}));
    assert_eq!(
        ok("a { x = 1 }\nb = ${a}\na { y = 2 }\na.z = 3"),
        json!({"a": {"x": 1, "y": 2, "z": 3}, "b": {"x": 1, "y": 2, "z": 3}})
    );
    // HOCON.md: an object may refer to paths within itself, resolved after the later merge.
    assert_eq!(
        ok("bar : { foo : 42, baz : ${bar.foo} }\nbar : { foo : 43 }"),
        json!({"bar": {"foo": 43, "baz": 43}})
    );
    // HOCON.md: mutually-referring objects.
    assert_eq!(
        ok("bar : { a : ${foo.d}, b : 1 }\nbar.b = 3\nfoo : { c : ${bar.b}, d : 2 }\nfoo.d = 4"),
        json!({"bar": {"a": 4, "b": 3}, "foo": {"c": 3, "d": 4}})
    );
    // A substitution into a field set by another substitution reads only what it needs.
    assert_eq!(
        ok("a = ${b}\nb { x = 1, y = ${a.x} }"),
        json!({"a": {"x": 1, "y": 1}, "b": {"x": 1, "y": 1}})
    );
    // A non-object hides what came before; `null` too, so objects do not merge across it.
    assert_eq!(
        ok("a { x = 1 }\na = null\na { y = 2 }\nb = ${a}")["b"],
        json!({"y": 2})
    );
    assert_eq!(ok("a = ${a.x}\na = 5\nb = ${a}"), json!({"a": 5, "b": 5}));
    // A hidden substitution is never evaluated, so naming nothing is no error there.
    assert_eq!(ok("a = ${nothing}\na = 1"), json!({"a": 1}));
    assert_eq!(ok("a = [${nothing}]\na = 1"), json!({"a": 1}));
    // Keys keep the order they first appeared in.
    let text = serde_json::to_string(&ok("z = 1\nb = ${z}\nz = 2\na { q = 1, p = 2 }\nc = ${a}"))
        .unwrap_or_default();
    assert_eq!(text, r#"{"z":2,"b":2,"a":{"q":1,"p":2},"c":{"q":1,"p":2}}"#);
}

#[test]
fn substitutions_concatenate() {
    let base = "s = text\nn = 10\nf = 1.5\nt = true\nz = null\nl = [1, 2]\no { x = 1 }\n";
    let cases = [
        (r#"v = "x"${s}"y""#, json!("xtexty")),
        ("v = ${n} secs", json!("10 secs")),
        ("v = ${s}${n}", json!("text10")),
        ("v = ${s}  and  ${f}  ", json!("text  and  1.5")),
        ("v = is ${t}", json!("is true")),
        // HOCON: a substitution that is null reads as nothing in a string, a literal null not.
        ("v = [${z}x, null x]", json!(["x", "null x"])),
        ("v = ${l} [3]", json!([1, 2, 3])),
        ("v = [0] ${l}", json!([0, 1, 2])),
        ("v = ${l} ${l}", json!([1, 2, 1, 2])),
        ("v = [0] ${l} [3] [4]", json!([0, 1, 2, 3, 4])),
        ("v = ${o} { y = 2 }", json!({"x": 1, "y": 2})),
        ("v = { x = 0, y = 2 } ${o}", json!({"x": 1, "y": 2})),
        ("v = ${o} { x = 2 } ${o}", json!({"x": 1})),
        ("v = ${o} ${o}", json!({"x": 1})),
        ("v = [${s} x, ${l} [0]]", json!(["text x", [1, 2, 0]])),
    ];
    for (text, expected) in cases {
        assert_eq!(ok(&format!("{base}{text}"))["v"], expected, "{text}");
    }
    // An object concatenation in a field merges with the field's earlier value, as duplicate
    // keys do; in an array it stands alone.
    assert_eq!(
        ok("o { x = 1 }\nv { w = 0 }\nv = ${o} { y = 2 }\nl = [${o} { y = 2 }]"),
        json!({"o": {"x": 1}, "v": {"w": 0, "x": 1, "y": 2}, "l": [{"x": 1, "y": 2}]})
    );
}

#[test]
fn self_references_read_the_earlier_value() {
    assert_eq!(
        ok("path = \"a:b:c\"\npath = ${path}\":d\"\npath = ${path}\":e\""),
        json!({"path": "a:b:c:d:e"})
    );
    assert_eq!(
        ok("a = [w]\na = ${a} [x]\na = [v] ${a}"),
        json!({"a": ["v", "w", "x"]})
    );
    assert_eq!(
        ok("a = [w]\na = ${a} [x]\nb = ${a}"),
        json!({"a": ["w", "x"], "b": ["w", "x"]})
    );
    // `+=` is `a = ${?a} [x]`.
    assert_eq!(
        ok("a = [0]\na += 1\na = ${a} [2]\na += 3"),
        json!({"a": [0, 1, 2, 3]})
    );
    assert_eq!(
        ok("b = ${a}\na += 1\na += 2"),
        json!({"b": [1, 2], "a": [1, 2]})
    );
    assert_eq!(
        ok("l = [0]\na = ${l}\na += 1"),
        json!({"l": [0], "a": [0, 1]})
    );
    // A self-reference inside an object concatenation.
    assert_eq!(
        ok("a { x = 1 }\na = ${a} { y = ${a.x} }"),
        json!({"a": {"x": 1, "y": 1}})
    );
    assert_eq!(
        ok("a { x = 1 }\na = { x = 2 } ${a}"),
        json!({"a": {"x": 1}})
    );
    // HOCON.md: a self-reference into a path within the field.
    assert_eq!(
        ok("foo : { a : { c : 1 } }\nfoo : ${foo.a}\nfoo : { a : 2 }"),
        json!({"foo": {"a": 2, "c": 1}})
    );
    // Nested fields, and fields set by dotted keys.
    assert_eq!(
        ok("x { p = a }\nx { p = ${x.p}b }\nx.p = ${x.p}c"),
        json!({"x": {"p": "abc"}})
    );
    // Other substitutions in a self-referential field still look forward.
    assert_eq!(ok("a = 1\na = ${a}${b}\nb = 2"), json!({"a": "12", "b": 2}));
    // Each definition reads the one before, however many there are.
    let many = "a += 1\n".repeat(1000);
    assert_eq!(ok(&many)["a"].as_array().map(Vec::len), Some(1000));
}

#[test]
fn substitution_errors() {
    let cases = [
        (
            "a = 1\nb = ${a.b}",
            "line 2, column 5: `${a.b}` names nothing in this document (substitutions are looked \
             up in the document only, never in the environment)",
        ),
        (
            "b = x ${HOME} y",
            "line 1, column 7: `${HOME}` names nothing in this document (substitutions are \
             looked up in the document only, never in the environment)",
        ),
        (
            "a = ${a}",
            "line 1, column 5: `${a}` refers to `a` itself, which has no earlier value",
        ),
        (
            "a { x = 1 }\na = ${a.y}",
            "line 2, column 5: `${a.y}` names nothing in `a` as it was before this definition (a \
             field that refers to itself reads its earlier value)",
        ),
        (
            "a.b = x\na.b = ${a.b}${a.c}",
            "line 2, column 13: `${a.c}` names nothing in this document (substitutions are looked \
             up in the document only, never in the environment)",
        ),
        (
            "a = ${b}\nb = ${a}",
            "line 2, column 5: substitutions form a cycle: `a` → `b` → `a`",
        ),
        (
            "a = ${b}\nb = x${c}\nc = [${a}]",
            "line 3, column 6: substitutions form a cycle: `a` → `b` → `c` → `a`",
        ),
        (
            "a { b = ${a} }",
            "line 1, column 9: substitutions form a cycle: `a.b` → `a` → `a.b`",
        ),
        (
            "a = [${a}]",
            "line 1, column 6: substitutions form a cycle: `a` → `a`",
        ),
        (
            "a = [1, {b = ${a}}]",
            "line 1, column 14: substitutions form a cycle: `a` → `a`",
        ),
        (
            "a += ${a}",
            "line 1, column 6: substitutions form a cycle: `a` → `a`",
        ),
        (
            "o { x = 1 }\na = ${o} x",
            "line 2, column 10: cannot concatenate a string with `${o}` (an object)",
        ),
        (
            "l = [1]\na = x ${l}",
            "line 2, column 7: cannot concatenate `${l}` (an array) with a string",
        ),
        (
            "l = [1]\no {}\na = ${l} ${o}",
            "line 3, column 10: cannot concatenate `${o}` (an object) with `${l}` (an array)",
        ),
        (
            "s = x\na = ${s} { y = 1 }",
            "line 2, column 5: cannot concatenate `${s}` (a string) with an object",
        ),
        (
            "s = [x]\na = { y = 1 } ${s}",
            "line 2, column 15: cannot concatenate `${s}` (an array) with an object",
        ),
        (
            "o {}\na = ${o} [1]",
            "line 2, column 10: cannot concatenate an array with `${o}` (an object)",
        ),
        (
            "o {}\na = ${o}\na += 1",
            "line 3, column 3: cannot append to `a` with `+=`: it holds an object, not an array",
        ),
        (
            "a { x = 1 }\na += 1",
            "line 2, column 3: cannot append to `a` with `+=`: it holds an object, not an array",
        ),
        (
            "x { a = 1, a += 2 }",
            "line 1, column 14: cannot append to `x.a` with `+=`: it holds a number, not an array",
        ),
        (
            "a = ${?HOME}",
            "line 1, column 5: `${?HOME}`: environment lookups are not supported: a posted \
             config must not read the server's environment",
        ),
        (
            "a = [1, \"${?x}\", ${?x.\"y z\"}]",
            "line 1, column 18: `${?x.\"y z\"}`: environment lookups are not supported: a posted \
             config must not read the server's environment",
        ),
        (
            "a = ${b",
            "line 1, column 8: expected `}` to close the substitution opened at line 1, column 5, \
             found end of input",
        ),
        (
            "a = ${}",
            "line 1, column 7: expected a path after `${`, found `}`",
        ),
        (
            "a = ${b.}",
            "line 1, column 9: expected a key segment after `.`, found `}`",
        ),
        ("${a} = 1", "line 1, column 1: expected a key, found `$`"),
        (
            "a = x$y",
            "line 1, column 6: `$` is not allowed in an unquoted string; put the value in double quotes",
        ),
        (
            "include \"x\"\na = ${b}",
            "line 1, column 1: `include` is not supported",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(err(text), expected, "input: {text:?}");
    }
    // A quoted `${...}` is text, not a substitution.
    assert_eq!(ok("a = \"${b}\""), json!({"a": "${b}"}));
    assert_eq!(ok("a = \"\"\"${?b}\"\"\""), json!({"a": "${?b}"}));
}

#[test]
fn long_cycles_and_names_make_short_errors() {
    // A cycle through 25 fields names its ends, not all of them.
    let mut text: String = (0..25)
        .map(|i| format!("k{i} = ${{k{}}}\n", i + 1))
        .collect();
    text.push_str("k25 = ${k0}\n");
    let message = err(&text);
    assert!(
        message.contains("substitutions form a cycle: `k0` → `k1` → `k2` → `k3` → …"),
        "{message}"
    );
    assert!(message.len() < 300, "{message}");
    // A long path is echoed short.
    let key = "k".repeat(1 << 20);
    let message = err(&format!("a = ${{{key}}}"));
    assert!(
        message.len() < 300 && message.contains('…'),
        "{} bytes",
        message.len()
    );
}

#[test]
fn substitution_expansion_is_bounded() {
    // "Billion laughs": every line doubles the document.
    let mut laughs = String::from("l0 = [lol, lol]\n");
    for i in 1..64 {
        laughs.push_str(&format!("l{i} = [${{l{}}}, ${{l{}}}]\n", i - 1, i - 1));
    }
    let start = std::time::Instant::now();
    let message = err(&laughs);
    assert!(
        message.contains(&format!(
            "substitutions expand the document by more than {MAX_EXTRA_VALUES} values, which is \
             not supported"
        )),
        "{message}"
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
    // The same with strings, and with objects.
    let mut strings = format!("s0 = \"{}\"\n", "x".repeat(1000));
    for i in 1..64 {
        strings.push_str(&format!("s{i} = ${{s{}}}${{s{}}}\n", i - 1, i - 1));
    }
    assert!(err(&strings).contains("bytes of text, which is not supported"));
    let mut objects = String::from("o0 { a = 1 }\n");
    for i in 1..64 {
        objects.push_str(&format!(
            "o{i} {{ a = ${{o{}}}, b = ${{o{}}} }}\n",
            i - 1,
            i - 1
        ));
    }
    assert!(err(&objects).contains("values, which is not supported"));
    // Without substitutions, a document is limited by nothing but its size.
    let big = format!("a = [{}]", "1,".repeat(MAX_EXTRA_VALUES + 10));
    assert_eq!(
        ok(&big)["a"].as_array().map(Vec::len),
        Some(MAX_EXTRA_VALUES + 10)
    );
    let big = format!("{big}\nb = 1\nc = [${{b}}, ${{b}}]");
    assert_eq!(
        ok(&big)["a"].as_array().map(Vec::len),
        Some(MAX_EXTRA_VALUES + 10)
    );
    // But copying more than the allowance is refused.
    let big = format!("{big}\nd = ${{a}}");
    assert!(err(&big).contains("values, which is not supported"));
}

#[test]
fn substitution_depth_is_bounded_without_overflowing_the_stack() {
    // Nesting built by substitutions is capped like nesting written out.
    let deep =
        |depth: usize, inner: &str| format!("{}{inner}{}", "[".repeat(depth), "]".repeat(depth));
    // `e` holds 27 + 100 arrays, at levels 2 to 128 of the document.
    let mut e = &ok(&format!("d = {}\ne = {}", deep(100, ""), deep(27, "${d}")))["e"];
    let mut levels = 0;
    while let Some(inner) = e.as_array() {
        levels += 1;
        e = inner.first().unwrap_or(&Value::Null);
    }
    assert_eq!(levels, 127);
    assert_eq!(
        err(&format!("d = {}\ne = {}", deep(100, ""), deep(28, "${d}"))),
        format!("line 2, column 33: nesting deeper than {MAX_DEPTH} levels is not supported")
    );
    let objects = format!(
        "d = {}{{}}{}\ne = {}${{d}}{}",
        "{ x = ".repeat(100),
        " }".repeat(100),
        "{ y = ".repeat(28),
        " }".repeat(28)
    );
    assert!(
        err(&objects).ends_with("levels is not supported"),
        "{}",
        err(&objects)
    );
    // Long chains of substitutions are refused, at the substitution that goes too far.
    let mut chain: String = (0..1000)
        .map(|i| format!("c{i} = ${{c{}}}\n", i + 1))
        .collect();
    chain.push_str("c1000 = 1\n");
    assert_eq!(
        err(&chain),
        format!(
            "line {}, column 7: more than {MAX_SUBSTITUTION_CHAIN} substitutions depend on one \
             another (`a = ${{b}}`, `b = ${{c}}`, …), which is not supported",
            MAX_SUBSTITUTION_CHAIN + 1
        )
    );
    let chain: String = (0..MAX_SUBSTITUTION_CHAIN)
        .map(|i| format!("c{i} = ${{c{}}}\n", i + 1))
        .chain([format!("c{MAX_SUBSTITUTION_CHAIN} = 1\n")])
        .collect();
    assert_eq!(ok(&chain)["c0"], json!(1));
    // The deepest values, reached through the longest chains, on a thread with a small stack.
    let deep = format!(
        "{}{}\n{}",
        "d { ".repeat(MAX_DEPTH - 2),
        "x = 1",
        " }".repeat(MAX_DEPTH - 2)
    );
    let path = format!("{}x", "d.".repeat(MAX_DEPTH - 2));
    let mut text = deep;
    text.push_str(&format!("\nc0 = ${{{path}}}\n"));
    for i in 1..MAX_SUBSTITUTION_CHAIN {
        text.push_str(&format!("c{i} = [${{c{}}}] ${{d}}\n", i - 1));
    }
    let worker = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || parse(&text).map(drop));
    let outcome = worker.map(|handle| handle.join());
    assert!(
        matches!(outcome, Ok(Ok(_))),
        "the resolver overflowed a 1 MiB stack"
    );
}

#[test]
fn the_resolver_recursion_is_bounded() {
    const STACK: usize = 1 << 20;
    // Each `n{i}` merges a 100-level object whose innermost value reads through `n{i+1}`: every
    // link of the chain nests the resolver 100 levels deeper, though no value is deep.
    let depth = 100;
    let path = format!("{}v", "k.".repeat(depth));
    let mut text = String::from("e {}\n");
    for i in 0..10 {
        text.push_str(&format!(
            "x{i} {{ {}v = ${{n{}.{path}}}{} }}\nn{i} = ${{x{i}}} ${{e}}\n",
            "k { ".repeat(depth),
            i + 1,
            " }".repeat(depth)
        ));
    }
    text.push_str("n10 = 1\n");
    let worker = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(move || parse(&text).map_err(|e| e.message));
    let outcome = worker.map(|handle| handle.join());
    let Ok(Ok(Err(message))) = outcome else {
        panic!("expected an error, got {outcome:?}");
    };
    assert_eq!(
        message,
        format!(
            "substitutions and nesting go deeper than {MAX_RESOLVE_STEPS} steps, which is not \
             supported"
        )
    );
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
    fn substituted_values_equal_their_targets(value in json_value()) {
        let text = serde_json::to_string(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let document = format!("x = {text}\ny = ${{x}}\nz = [${{x}}] [${{y}}]\n");
        let parsed = parse(&document).map_err(|e| TestCaseError::fail(format!("{document}: {e}")))?;
        // serde_json reads floats back to within a unit of the last place, so compare with that.
        let value: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed, json!({"x": value.clone(), "y": value.clone(), "z": [value.clone(), value]}));
    }

    #[test]
    fn documents_dense_in_substitutions_resolve_or_fail_cleanly(
        lines in prop::collection::vec(
            (
                prop::sample::select(vec!["a", "b", "a.b", "b.c", "c", "a.b.c", "\"a.b\""]),
                prop::sample::select(vec![" = ", " : ", " += "]),
                prop::collection::vec(
                    prop::sample::select(vec![
                        "${a}", "${b}", "${a.b}", "${b.c}", "${c}", "${a.b.c}", "${a}", "${b}",
                        "${c}", "1", "x", "\"s\"", "[1]", "[${a}]", "{}", "{ x = ${c} }",
                        "{ c = 2 }", "null", "[]", "{ a += 1 }",
                    ]),
                    1..3,
                ),
                prop::sample::select(vec!["", " "]),
            ),
            1..10,
        )
    ) {
        let text: String = lines
            .iter()
            .map(|(key, op, pieces, gap)| format!("{key}{op}{}\n", pieces.join(gap)))
            .collect();
        match parse(&text) {
            Ok(value) => prop_assert!(serde_json::to_string(&value).is_ok()),
            Err(error) => {
                prop_assert!(error.line >= 1 && error.column >= 1, "{text}: {error}");
                prop_assert!(error.line <= text.lines().count() + 1, "{text}: {error}");
                prop_assert!(!error.message.is_empty());
            }
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
