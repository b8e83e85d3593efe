//! The one way text reaches HTML outside the view renderer's own escaping.
//!
//! Leptos's renderer (tachys) escapes text children and attribute values, except in three
//! places that hostile text has used to break out of a page (the security issue's stored
//! script injection):
//!
//! - the document title: leptos_meta 0.8 writes `<Title>` text into the server's HTML as it is;
//! - `<textarea>` (and `<noscript>`, `<script>`, `<style>`): tachys treats their children as raw
//!   text and does not escape them, yet `</textarea>` in the text ends the element;
//! - `inner_html`, which is never used.
//!
//! So the title formatter ([`title`]) and the [`TextArea`] component pass their text through
//! [`escape_on_server`], which escapes on the server only: in the browser the same text is set
//! through the DOM (`document.title`, a text node), which must not see entities. The test
//! `raw_text_elements_only_go_through_this_module` keeps pages from writing a `<textarea>` or a
//! title formatter of their own, or any `inner_html`.

use leptos::prelude::*;

/// `text` with `&`, `<`, `>`, `"` and `'` replaced by character references, so it is inert in
/// element content, raw-text elements' content and quoted attribute values alike.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text for a place the renderer does not escape: escaped when rendering HTML on the server,
/// unchanged in the browser (where it is set through the DOM).
pub fn escape_on_server(text: &str) -> String {
    if cfg!(feature = "ssr") {
        escape(text)
    } else {
        text.to_owned()
    }
}

/// The document title for a page's `<Title text=…>`: "Page · Hangar", escaped on the server.
pub fn title(page: String) -> String {
    let full = if page.is_empty() { "Hangar".to_owned() } else { format!("{page} · Hangar") };
    escape_on_server(&full)
}

/// A `<textarea>` holding `value`. Pass its attributes with `attr:` (`attr:id`, `attr:name`,
/// `attr:rows`, …); they land on the element and are escaped like any attribute.
#[component]
pub fn TextArea(
    /// The text to show in the field (user data: escaped on the server).
    #[prop(into)]
    value: String,
) -> impl IntoView {
    view! { <textarea>{escape_on_server(&value)}</textarea> }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_makes_markup_inert() {
        assert_eq!(
            escape(r#"x</title><script>alert('1')</script> & "q""#),
            "x&lt;/title&gt;&lt;script&gt;alert(&#39;1&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape("plain text · ü"), "plain text · ü");
    }

    #[test]
    fn titles_are_escaped_when_rendered_on_the_server() {
        if cfg!(feature = "ssr") {
            assert_eq!(title("a</title><b>".into()), "a&lt;/title&gt;&lt;b&gt; · Hangar");
        } else {
            assert_eq!(title("a</title><b>".into()), "a</title><b> · Hangar");
        }
        assert_eq!(title(String::new()), "Hangar");
    }

    /// Every `.rs` file under `src/`, with its path.
    fn sources() -> Vec<(std::path::PathBuf, String)> {
        fn walk(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, String)>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push((path.clone(), std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
        out
    }

    /// The lines of `text` (the source file `path`) that write raw-text HTML themselves:
    /// `<textarea`, `<script`, `<style`, `<noscript` (also leptos_meta's `<Script>`/`<Style>`),
    /// whose user text would not be escaped; `inner_html`/`innerHTML`, which bypass escaping; a
    /// title formatter other than `html::title`. Compared without case (and, for the formatter,
    /// without spaces). The one `<noscript>` allowed is the Upload page's literal notice.
    fn raw_text_lines(path: &std::path::Path, text: &str) -> Vec<String> {
        let mut offenders = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let lower = line.to_ascii_lowercase();
            let squashed: String = lower.chars().filter(|c| !c.is_whitespace()).collect();
            for needle in ["<textarea", "<script", "<style", "<noscript", "inner_html", "innerhtml", "formatter="] {
                let hay = if needle == "formatter=" { &squashed } else { &lower };
                let allowed = (needle == "formatter=" && squashed.contains("formatter=crate::html::title"))
                    || (needle == "<noscript" && squashed == "<noscript>" && path.ends_with("pages/upload.rs"));
                // An element name ends where letters end (`<Stylesheet` is not `<style`).
                let found = hay
                    .match_indices(needle)
                    .any(|(at, _)| !needle.starts_with('<') || !hay[at + needle.len()..].starts_with(|c: char| c.is_ascii_alphanumeric()));
                if found && !allowed {
                    offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                }
            }
        }
        offenders
    }

    #[test]
    fn the_guard_sees_raw_text_elements() {
        let page = std::path::Path::new("src/pages/x.rs");
        for bad in [
            r#"<textarea id="x">{v}</textarea>"#,
            "<TEXTAREA>",
            r#"<Script>{v}</Script>"#,
            "<style>",
            "<noscript>{v}</noscript>",
            "<div inner_html=v />",
            "<div prop:innerHTML=v />",
            "<Title formatter = |t| t />",
        ] {
            assert_eq!(raw_text_lines(page, bad).len(), 1, "{bad}");
        }
        for fine in [
            r#"<Stylesheet id="leptos" href="/x.css" />"#,
            "// <textarea> in a comment",
            "<Title formatter=crate::html::title />",
            "<p>{v}</p>",
        ] {
            assert!(raw_text_lines(page, fine).is_empty(), "{fine}");
        }
        assert!(raw_text_lines(std::path::Path::new("src/pages/upload.rs"), "        <noscript>").is_empty());
    }

    #[test]
    fn raw_text_elements_only_go_through_this_module() {
        let this = std::path::Path::new(file!()).file_name().unwrap().to_owned();
        let mut offenders = Vec::new();
        for (path, text) in sources() {
            if path.file_name() != Some(this.as_os_str()) {
                offenders.extend(raw_text_lines(&path, &text));
            }
        }
        assert!(offenders.is_empty(), "raw-text HTML outside app/src/html.rs:\n{}", offenders.join("\n"));
    }
}
