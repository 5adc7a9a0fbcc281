//! The static HTML report each dataset command writes beside its files (`index.html`): no
//! server, no script, every reference a relative file name in the same folder, so the folder
//! can be moved or opened from disk.

/// A picture of the report.
#[derive(Clone, Debug)]
pub struct Figure {
    /// the picture's file name, relative to the report
    pub file: String,
    /// the caption under it
    pub caption: String,
}

/// `s` with HTML's special characters escaped.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A page: a title, an introduction (HTML, already escaped), the figures, links to data files.
pub fn page(title: &str, intro_html: &str, figures: &[Figure], data: &[&str]) -> String {
    page_with(title, intro_html, figures, "", data)
}

/// [`page`] with more HTML (already escaped) after the figures: tables, sections.
pub fn page_with(title: &str, intro_html: &str, figures: &[Figure], body_html: &str, data: &[&str]) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>deepviz {t}</title>\n<style>body{{font-family:sans-serif;margin:2em;max-width:80em}}figure{{display:inline-block;margin:0 1em 1em 0}}img{{max-width:100%;image-rendering:pixelated}}figcaption{{font-size:90%}}table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ccc;padding:2px 8px;text-align:left}}</style>\n</head>\n<body>\n<h1>deepviz {t}</h1>\n<p>{intro_html}</p>\n",
        t = escape(title)
    );
    if !data.is_empty() {
        s += "<p>Data: ";
        s += &data.iter().map(|d| format!("<a href=\"{0}\">{0}</a>", escape(d))).collect::<Vec<_>>().join(", ");
        s += "</p>\n";
    }
    for f in figures {
        s += &format!("<figure><img src=\"{0}\" alt=\"{1}\"><figcaption>{1}</figcaption></figure>\n", escape(&f.file), escape(&f.caption));
    }
    s + body_html + "</body>\n</html>\n"
}

/// Every file a page references (`src="…"` and `href="…"`), for checks.
pub fn references(html: &str) -> Vec<String> {
    let mut out = vec![];
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            if let Some(end) = rest.find('"') {
                out.push(rest[..end].replace("&amp;", "&").replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">"));
            }
        }
    }
    out
}
