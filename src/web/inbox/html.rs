//! Sanitising HTML mail (ammonia): no script, no event handlers, no styles, no forms, no
//! remote content. Images show only when embedded as `data:image/…`; links keep `http(s)`
//! and `mailto` targets. The frame it is shown in is sandboxed without scripts and has
//! its own CSP (`default-src 'none'`), as a second line of defence.

use std::collections::HashSet;
use std::sync::LazyLock;

static CLEANER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let mut b = ammonia::Builder::default();
    b.url_schemes(HashSet::from(["http", "https", "mailto", "data"]))
        .link_rel(Some("noopener noreferrer nofollow"))
        .attribute_filter(|element, attribute, value| match (element, attribute) {
            // Remote images are tracking pixels: only embedded images survive.
            (_, "src") if value.starts_with("data:image/") => Some(value.into()),
            (_, "src" | "srcset" | "background" | "poster") => None,
            // `data:` is for images only, never a link target.
            (_, "href") if value.trim_start().to_ascii_lowercase().starts_with("data:") => None,
            _ => Some(value.into()),
        });
    b
});

/// `html`, sanitised for display in the sandboxed frame.
pub fn sanitise(html: &str) -> String {
    CLEANER.clean(html).to_string()
}

#[cfg(test)]
mod tests {
    use super::sanitise;

    #[test]
    fn scripts_handlers_styles_and_remote_images_go() {
        let dirty = r#"<p onclick="alert(1)">Hi<script>alert(2)</script></p>
            <style>body{background:url(https://evil.example/x)}</style>
            <img src="https://tracker.example/p.gif" alt="pixel">
            <img src="data:image/png;base64,iVBORw0KGgo=" alt="ok">
            <a href="javascript:alert(3)">j</a><a href="data:text/html,x">d</a>
            <a href="https://lemgo.example/">fine</a>
            <div style="background:url(https://evil.example/y)">s</div>
            <iframe src="https://evil.example"></iframe><form action="https://evil.example"><input></form>"#;
        let clean = sanitise(dirty);
        for bad in [
            "onclick",
            "script",
            "alert",
            "tracker.example",
            "evil.example",
            "javascript:",
            "data:text",
            "style",
            "iframe",
            "<form",
            "<input",
        ] {
            assert!(!clean.contains(bad), "{bad} survived: {clean}");
        }
        assert!(clean.contains("data:image/png"), "{clean}");
        assert!(clean.contains("https://lemgo.example/"), "{clean}");
    }
}
