//! Errors that name the real problem on hostile input: invisible characters shown escaped
//! and never "did you mean" the same word, `=>=>` not offered as a fix, echoed text and
//! snippets bounded, and large inputs (100,000 expectation items, 160,000 reserved ranges, a
//! 10 MB word) parsed in linear time — asserted by their results; times are in the notes.

use type1_trace::parse::{MAX_MESSAGE, MAX_QUOTE};
use type1_trace::{parse, ParseError, StmtKind};

fn err(src: &str) -> ParseError {
    parse(src).expect_err("should not parse")
}

#[test]
fn a_nul_in_a_word_is_named_and_not_suggested_as_itself() {
    let e = err("container\ncheck\0\n");
    assert_eq!((e.line, e.col), (2, 6));
    assert_eq!(
        e.msg,
        "invisible character U+0000 (a NUL byte) in the statement: delete it"
    );
    assert!(!e.msg.contains("did you mean"));
    // The snippet shows it escaped, the caret under it.
    assert_eq!(
        e.snippet("container\ncheck\0\n"),
        "2 | check<U+0000>\n  |      ^"
    );
}

#[test]
fn a_second_byte_order_mark_is_named() {
    let e = err("\u{feff}\u{feff}container\n");
    assert_eq!((e.line, e.col), (1, 1));
    assert_eq!(
        e.msg,
        "invisible character U+FEFF (a byte-order mark (only one, at the very start of the \
         file, is allowed)) in the statement: delete it"
    );
    // One is fine, in front of the first line only.
    assert!(parse("\u{feff}container\n").is_ok());
    let e = err("container\n\u{feff}check\n");
    assert_eq!((e.line, e.col), (2, 1));
}

#[test]
fn control_and_zero_width_characters_are_named() {
    let e = err("container\nmap vaddr=0 iova=0 si\u{1b}ze=4K\n");
    assert_eq!((e.line, e.col), (2, 22));
    assert!(
        e.msg
            .starts_with("invisible character U+001B (an escape character)"),
        "{}",
        e.msg
    );
    let e = err("container\nch\u{200b}eck\n");
    assert_eq!(
        e.msg,
        "invisible character U+200B (a zero-width space) in the statement: delete it"
    );
    // In a comment they are harmless; tabs and other whitespace separate words as before.
    assert!(parse("container # \u{0}\u{200b}\ncheck\t=>\tdmas=0\n").is_ok());
}

#[test]
fn double_arrows_are_not_offered_as_a_fix() {
    for (src, col) in [
        ("container\ncheck =>=> dmas=0\n", 9),
        ("container\ninfo =>=> ok\n", 8),
    ] {
        let e = err(src);
        assert_eq!(e.msg, "only one `=>` per line", "{src:?}");
        assert_eq!((e.line, e.col), (2, col));
    }
    let e = err("container\ninfo => =x\n");
    assert_eq!(
        e.msg,
        "`=x` after `=>`: write `ok` or an errno name such as `EINVAL`, then items"
    );
}

#[test]
fn a_10_mb_word_is_quoted_by_its_start_and_its_length() {
    let word = "x".repeat(10_000_000);
    for src in [
        format!("{word}\n"),
        format!("container\nmap vaddr=0 iova=0 size=4K {word}=1\n"),
        format!("container\nmmap ram size=4K backing={word}\n"),
        format!("container\ninfo => {}\n", word.to_uppercase()),
        format!("container\ncheck => {word}=1\n"),
    ] {
        let e = err(&src);
        assert!(e.msg.len() <= MAX_MESSAGE, "{} bytes", e.msg.len());
        // `… (10000000 bytes)`, or 10000001 where the quote is `KEY=`.
        assert!(
            e.msg
                .contains(&format!("{}… (1000000", "x".repeat(MAX_QUOTE)))
                || e.msg
                    .contains(&format!("{}… (1000000", "X".repeat(MAX_QUOTE))),
            "{}",
            e.msg
        );
        assert!(!e.msg.contains("did you mean"));
        // The snippet is a window of the line, not the line.
        assert!(e.snippet(&src).len() < 1000);
    }
}

#[test]
fn a_long_line_snippet_is_a_window_around_the_column() {
    let pad = "1".repeat(300);
    let src = format!("container\nmap vaddr=0 iova=0 size=4K flags={pad},bogus\n");
    let e = err(&src);
    // The 300-digit number is quoted by its start.
    assert_eq!(
        e.msg,
        format!(
            "`{}… (300 bytes)` does not fit in 64 bits (above 2^64-1)",
            "1".repeat(MAX_QUOTE)
        )
    );
    assert_eq!(e.col, "map vaddr=0 iova=0 size=4K flags=".len() + 1);
    let src = format!(
        "container\nmap vaddr=0 iova=0 size=4K flags={}bogus\n",
        "1,".repeat(150)
    );
    let e = err(&src);
    assert!(e.msg.starts_with("unknown flag `bogus`"), "{}", e.msg);
    let s = e.snippet(&src);
    let (line, caret) = s.split_once('\n').unwrap();
    assert!(
        line.starts_with("2 | …") && line.ends_with(",bogus"),
        "{line}"
    );
    // The caret is under the `b` of `bogus`.
    let at = caret.chars().count() - 1;
    assert_eq!(line.chars().nth(at), Some('b'), "{s}");
}

#[test]
fn one_hundred_thousand_expectation_items_and_a_duplicate() {
    let items: String = (0..100_000).map(|i| format!(" leaves.d{i}.4K=0")).collect();
    let t = parse(&format!("container\ncheck =>{items}\n")).unwrap();
    assert_eq!(t.stmts[1].expect.as_ref().unwrap().items.len(), 100_000);
    let src = format!("container\ncheck =>{items} leaves.d99999.4K=1\n");
    let e = err(&src);
    assert_eq!(e.msg, "`leaves.d99999.4K=` is expected twice: keep one");
    assert_eq!(e.col, "check =>".len() + items.len() + 2);
}

#[test]
fn one_hundred_sixty_thousand_reserved_ranges_parse() {
    let ranges: Vec<String> = (0..160_000u64)
        .map(|i| format!("{:#x}-{:#x}", (2 * i + 1) << 12, ((2 * i + 2) << 12) - 1))
        .collect();
    let src = format!(
        "container\ndomain d0 format=mock reserved={}\n",
        ranges.join(",")
    );
    let t = parse(&src).unwrap();
    let StmtKind::Domain { reserved, .. } = &t.stmts[1].kind else {
        panic!("not a domain")
    };
    let r = reserved.as_ref().unwrap();
    assert_eq!(r.len(), 160_000);
    assert_eq!(r[159_999], (319_999 << 12, (320_000 << 12) - 1));
}
