//! Readable text from an HTML page: scripts, styles and tags dropped, entities decoded,
//! block elements on their own lines, whitespace collapsed and empty lines dropped.
//!
//! A small scanner rather than a full HTML parser: it never builds a tree, so malformed
//! markup only makes the text a little worse, never fails.

/// Elements whose content is not text a reader sees.
const SKIPPED_ELEMENTS: &[&str] = &[
    "script", "style", "noscript", "template", "svg", "iframe", "object", "canvas",
];

/// Elements that start a new line.
const BLOCK_ELEMENTS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "details",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "summary",
    "table",
    "title",
    "tr",
    "ul",
];

/// The readable text of `html`.
pub(crate) fn extract(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let mut text = String::with_capacity(html.len() / 2);
    let mut position = 0;
    while let Some(offset) = html[position..].find('<') {
        let tag_start = position + offset;
        push_text(&mut text, &html[position..tag_start]);
        position = match skip_markup(&lower, tag_start, &mut text) {
            Some(next) => next,
            None => {
                // A '<' that opens no markup ("a < b") is text.
                text.push('<');
                tag_start + 1
            }
        };
    }
    push_text(&mut text, &html[position..]);
    collapse_whitespace(&text)
}

/// Skips the comment, declaration or tag at `start` (and a skipped element's content),
/// writing a line break for a block element; the position after it, or `None` when the
/// '<' opens no markup.
fn skip_markup(lower: &str, start: usize, text: &mut String) -> Option<usize> {
    let rest = &lower[start..];
    if rest.starts_with("<!--") {
        return Some(end_of(lower, start + 4, "-->"));
    }
    if rest.starts_with("<!") || rest.starts_with("<?") {
        return Some(end_of(lower, start + 2, ">"));
    }
    let closing = rest.starts_with("</");
    let name_start = start + if closing { 2 } else { 1 };
    let name = tag_name(&lower[name_start..]);
    if name.is_empty() {
        return None;
    }
    let after_tag = end_of_tag(lower, name_start + name.len());
    let self_closing = lower[..after_tag].ends_with("/>");
    if BLOCK_ELEMENTS.contains(&name) {
        text.push('\n');
    } else if matches!(name, "td" | "th") {
        text.push(' ');
    }
    if !closing && !self_closing && SKIPPED_ELEMENTS.contains(&name) {
        let closing_tag = format!("</{name}");
        return Some(match lower[after_tag..].find(&closing_tag) {
            Some(offset) => end_of_tag(lower, after_tag + offset + closing_tag.len()),
            None => lower.len(),
        });
    }
    Some(after_tag)
}

/// The element name at the start of `rest` (ASCII letters, digits and '-', starting with a letter).
fn tag_name(rest: &str) -> &str {
    if !rest.starts_with(|character: char| character.is_ascii_alphabetic()) {
        return "";
    }
    let length = rest
        .find(|character: char| !(character.is_ascii_alphanumeric() || character == '-'))
        .unwrap_or(rest.len());
    &rest[..length]
}

/// The position after the '>' that ends a tag, skipping quoted attribute values.
fn end_of_tag(lower: &str, from: usize) -> usize {
    let mut quote = None;
    for (offset, character) in lower[from..].char_indices() {
        match (quote, character) {
            (None, '"' | '\'') => quote = Some(character),
            (Some(open), _) if character == open => quote = None,
            (None, '>') => return from + offset + 1,
            _ => {}
        }
    }
    lower.len()
}

/// The position after the first `terminator` at or after `from`, or the end.
fn end_of(lower: &str, from: usize, terminator: &str) -> usize {
    lower[from..]
        .find(terminator)
        .map_or(lower.len(), |offset| from + offset + terminator.len())
}

/// Appends a run of text with its entities decoded; line breaks in the source are
/// ordinary whitespace, so they become spaces.
fn push_text(text: &mut String, run: &str) {
    let mut rest = run;
    while let Some(ampersand) = rest.find('&') {
        push_spaced(text, &rest[..ampersand]);
        rest = &rest[ampersand..];
        match decode_entity(rest) {
            Some((decoded, length)) => {
                text.push(decoded);
                rest = &rest[length..];
            }
            None => {
                text.push('&');
                rest = &rest[1..];
            }
        }
    }
    push_spaced(text, rest);
}

fn push_spaced(text: &mut String, run: &str) {
    text.extend(run.chars().map(|character| {
        if character.is_whitespace() {
            ' '
        } else {
            character
        }
    }));
}

/// The character an entity at the start of `rest` stands for, and the entity's length.
fn decode_entity(rest: &str) -> Option<(char, usize)> {
    let end = rest.get(1..rest.len().min(12))?.find(';')? + 1;
    let name = &rest[1..end];
    let decoded = if let Some(number) = name.strip_prefix('#') {
        let value = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse().ok()?,
        };
        char::from_u32(value)
            .filter(|&character| character != '\0')
            .unwrap_or('\u{fffd}')
    } else {
        named_entity(name)?
    };
    Some((decoded, end + 1))
}

fn named_entity(name: &str) -> Option<char> {
    let character = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "middot" => '·',
        "bull" => '•',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "times" => '×',
        "euro" => '€',
        "pound" => '£',
        "deg" => '°',
        _ => return None,
    };
    Some(character)
}

/// Collapses runs of spaces, trims lines and drops empty ones.
fn collapse_whitespace(text: &str) -> String {
    let mut collapsed = String::with_capacity(text.len());
    for line in text.split('\n') {
        for (index, word) in line.split_whitespace().enumerate() {
            if index == 0 && !collapsed.is_empty() {
                collapsed.push('\n');
            } else if index > 0 {
                collapsed.push(' ');
            }
            collapsed.push_str(word);
        }
    }
    collapsed
}

#[cfg(test)]
mod tests {
    use super::extract;

    #[test]
    fn scripts_styles_comments_and_tags_are_dropped() {
        let html = r#"<!DOCTYPE html><html><head><title>The Title</title>
            <style>body { color: red }</style><script type="text/javascript">var a = "</p>";</script>
            </head><body><!-- a comment <p>hidden</p> --><p class="x>y">Hello,   <b>world</b>!</p>
            <SCRIPT>alert(1)</SCRIPT><div>Second&nbsp;line &amp; more</div></body></html>"#;
        assert_eq!(
            extract(html),
            "The Title\nHello, world!\nSecond line & more"
        );
    }

    #[test]
    fn entities_are_decoded_and_unknown_ones_kept() {
        assert_eq!(
            extract("a &lt;b&gt; &#65;&#x42; &unknown; AT&T &#0;"),
            "a <b> AB &unknown; AT&T \u{fffd}"
        );
    }

    #[test]
    fn a_lone_angle_bracket_is_text() {
        assert_eq!(extract("<p>1 < 2 and 3 > 2</p>"), "1 < 2 and 3 > 2");
    }

    #[test]
    fn blocks_become_lines_and_empty_lines_are_dropped() {
        let html = "<h1>Title</h1>\n\n<p>one</p><p></p><p></p><p>two<br>three</p><table><tr><td>a</td><td>b</td></tr></table>";
        assert_eq!(extract(html), "Title\none\ntwo\nthree\na b");
    }

    #[test]
    fn an_unclosed_script_drops_the_rest_of_the_page() {
        assert_eq!(
            extract("<p>before</p><script>never closed <p>after</p>"),
            "before"
        );
    }
}
