//! `info.xml`, snapper's per-snapshot metadata (type, num, date in UTC, uid, pre_num,
//! description, cleanup, userdata): written in snapper's element
//! order with XML escaping, read tolerantly (unknown elements are ignored, as snapper
//! does).

use super::time::{format_date, parse_date};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SnapshotKind {
    Single,
    Pre,
    Post,
}

impl SnapshotKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Single => "single",
            SnapshotKind::Pre => "pre",
            SnapshotKind::Post => "post",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "single" => Some(SnapshotKind::Single),
            "pre" => Some(SnapshotKind::Pre),
            "post" => Some(SnapshotKind::Post),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub num: u32,
    pub kind: SnapshotKind,
    /// Seconds since the epoch (UTC on disk).
    pub date: i64,
    pub uid: u32,
    pub pre_num: Option<u32>,
    pub description: String,
    /// `number`, `timeline` or empty (never cleaned up automatically).
    pub cleanup: String,
    pub userdata: BTreeMap<String, String>,
}

impl SnapshotInfo {
    pub fn single(num: u32, date: i64) -> SnapshotInfo {
        SnapshotInfo {
            num,
            kind: SnapshotKind::Single,
            date,
            uid: 0,
            pre_num: None,
            description: String::new(),
            cleanup: String::new(),
            userdata: BTreeMap::new(),
        }
    }

    pub fn is_important(&self) -> bool {
        self.userdata.get("important").map(String::as_str) == Some("yes")
    }

    /// The document snapper 0.10.4 writes, element for element.
    pub fn to_xml(&self) -> String {
        let mut s = String::from("<?xml version=\"1.0\"?>\n<snapshot>\n");
        let _ = writeln!(s, "  <type>{}</type>", self.kind.as_str());
        let _ = writeln!(s, "  <num>{}</num>", self.num);
        let _ = writeln!(s, "  <date>{}</date>", format_date(self.date));
        if self.uid != 0 {
            let _ = writeln!(s, "  <uid>{}</uid>", self.uid);
        }
        if let (SnapshotKind::Post, Some(pre)) = (self.kind, self.pre_num) {
            let _ = writeln!(s, "  <pre_num>{pre}</pre_num>");
        }
        if !self.description.is_empty() {
            let _ = writeln!(
                s,
                "  <description>{}</description>",
                escape(&self.description)
            );
        }
        if !self.cleanup.is_empty() {
            let _ = writeln!(s, "  <cleanup>{}</cleanup>", escape(&self.cleanup));
        }
        for (k, v) in &self.userdata {
            let _ = writeln!(
                s,
                "  <userdata>\n    <key>{}</key>\n    <value>{}</value>\n  </userdata>",
                escape(k),
                escape(v)
            );
        }
        s.push_str("</snapshot>\n");
        s
    }

    /// Reads an info.xml; refuses what snapper refuses (missing or bad type, num, date).
    pub fn from_xml(text: &str) -> Result<SnapshotInfo, String> {
        let root = parse(text)?;
        if root.name != "snapshot" {
            return Err(format!("root element is <{}>, not <snapshot>", root.name));
        }
        let field = |name: &str| {
            root.children
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.text.trim().to_string())
        };
        let kind = field("type")
            .and_then(|t| SnapshotKind::parse(&t))
            .ok_or("type missing or invalid")?;
        let num: u32 = field("num")
            .and_then(|n| n.parse().ok())
            .filter(|n| *n != 0)
            .ok_or("num missing or invalid")?;
        let date = field("date")
            .and_then(|d| parse_date(&d))
            .ok_or("date missing or invalid")?;
        let uid = field("uid").and_then(|u| u.parse().ok()).unwrap_or(0);
        let pre_num = field("pre_num").and_then(|p| p.parse().ok());
        let mut userdata = BTreeMap::new();
        for u in root.children.iter().filter(|c| c.name == "userdata") {
            let get = |n: &str| {
                u.children
                    .iter()
                    .find(|c| c.name == n)
                    .map(|c| c.text.trim().to_string())
            };
            if let (Some(k), Some(v)) = (get("key"), get("value")) {
                if !k.is_empty() {
                    userdata.insert(k, v);
                }
            }
        }
        Ok(SnapshotInfo {
            num,
            kind,
            date,
            uid,
            pre_num,
            description: root
                .children
                .iter()
                .find(|c| c.name == "description")
                .map(|c| c.text.clone())
                .unwrap_or_default(),
            cleanup: field("cleanup").unwrap_or_default(),
            userdata,
        })
    }
}

/// Checks a userdata key or value the way snapper's CLI does.
pub fn validate_userdata(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("userdata keys must not be empty".into());
    }
    for s in [key, value] {
        if s.contains([',', '=']) {
            return Err(format!("userdata {s:?} must not contain ',' or '='"));
        }
        if s.chars().any(char::is_control) {
            return Err(format!(
                "userdata {s:?} must not contain control characters"
            ));
        }
    }
    Ok(())
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_ascii() => out.push(c),
            // As snapper (libxml2) writes non-ASCII text.
            c => {
                let _ = write!(out, "&#x{:X};", c as u32);
            }
        }
    }
    out
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';').ok_or("unterminated entity")? + i;
        let ent = &rest[i + 1..end];
        let c = match ent {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code =
                    if let Some(h) = ent.strip_prefix("#x").or_else(|| ent.strip_prefix("#X")) {
                        u32::from_str_radix(h, 16).ok()
                    } else if let Some(d) = ent.strip_prefix('#') {
                        d.parse().ok()
                    } else {
                        None
                    };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown entity &{ent};"))?
            }
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A minimal element tree: enough for info.xml (no attributes are needed).
#[derive(Debug, Default)]
struct Element {
    name: String,
    text: String,
    children: Vec<Element>,
}

fn parse(text: &str) -> Result<Element, String> {
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut rest = text;
    while !rest.is_empty() {
        let Some(lt) = rest.find('<') else {
            let top = stack.last_mut().expect("stack has the document");
            top.text.push_str(&unescape(rest)?);
            break;
        };
        if lt > 0 {
            let top = stack.last_mut().expect("stack has the document");
            top.text.push_str(&unescape(&rest[..lt])?);
        }
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<?") {
            rest = &r[r.find("?>").ok_or("unterminated <?")? + 2..];
        } else if let Some(r) = rest.strip_prefix("<!--") {
            rest = &r[r.find("-->").ok_or("unterminated comment")? + 3..];
        } else if let Some(r) = rest.strip_prefix("<![CDATA[") {
            let end = r.find("]]>").ok_or("unterminated CDATA")?;
            stack.last_mut().expect("document").text.push_str(&r[..end]);
            rest = &r[end + 3..];
        } else if let Some(r) = rest.strip_prefix("<!") {
            rest = &r[r.find('>').ok_or("unterminated <!")? + 1..];
        } else if let Some(r) = rest.strip_prefix("</") {
            let end = r.find('>').ok_or("unterminated end tag")?;
            let name = r[..end].trim();
            let el = stack.pop().ok_or("unbalanced end tag")?;
            if el.name != name || stack.is_empty() {
                return Err(format!("mismatched </{name}>"));
            }
            stack.last_mut().expect("parent").children.push(el);
            rest = &r[end + 1..];
        } else {
            let r = &rest[1..];
            let end = r.find('>').ok_or("unterminated start tag")?;
            let tag = &r[..end];
            let self_closing = tag.ends_with('/');
            let name = tag
                .trim_end_matches('/')
                .split_whitespace()
                .next()
                .ok_or("empty tag")?
                .to_string();
            let el = Element {
                name,
                ..Default::default()
            };
            if self_closing {
                stack.last_mut().expect("parent").children.push(el);
            } else {
                stack.push(el);
            }
            rest = &r[end + 1..];
        }
    }
    if stack.len() != 1 {
        return Err("unclosed element".into());
    }
    let mut doc = stack.pop().expect("document");
    if doc.children.len() != 1 {
        return Err("expected one root element".into());
    }
    Ok(doc.children.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_snappers_layout_and_reads_it_back() {
        let mut i = SnapshotInfo::single(4, parse_date("2026-11-22 02:50:00").unwrap());
        i.description = "nightly <über> & co".into();
        i.cleanup = "timeline".into();
        i.userdata.insert("created_by".into(), "osm-hostd".into());
        i.userdata.insert("container".into(), "web1".into());
        let xml = i.to_xml();
        assert!(xml.contains("<date>2026-11-22 02:50:00</date>"), "{xml}");
        assert!(xml.contains("nightly &lt;&#xFC;ber&gt; &amp; co"), "{xml}");
        assert!(!xml.contains("<uid>"), "uid 0 is not written");
        let order: Vec<usize> = [
            "<type>",
            "<num>",
            "<date>",
            "<description>",
            "<cleanup>",
            "<userdata>",
        ]
        .iter()
        .map(|t| xml.find(t).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{xml}");
        assert_eq!(SnapshotInfo::from_xml(&xml).unwrap(), i);
    }

    #[test]
    fn reads_what_snapper_writes() {
        let xml = "<?xml version=\"1.0\"?>\n<snapshot>\n  <type>post</type>\n  <num>6</num>\n  \
                   <date>2026-11-22 02:52:00</date>\n  <uid>1000</uid>\n  <pre_num>5</pre_num>\n  \
                   <description>after &#252;pgrade</description>\n  <cleanup>number</cleanup>\n  \
                   <userdata>\n    <key>important</key>\n    <value>yes</value>\n  </userdata>\n  \
                   <unknown>x</unknown>\n</snapshot>\n";
        let i = SnapshotInfo::from_xml(xml).unwrap();
        assert_eq!(
            (i.num, i.kind, i.uid, i.pre_num),
            (6, SnapshotKind::Post, 1000, Some(5))
        );
        assert_eq!(i.description, "after üpgrade");
        assert!(i.is_important());
    }

    #[test]
    fn refuses_what_snapper_refuses() {
        for bad in [
            "<snapshot><type>single</type><num>1</num><date>2026-11-22T02:55:00Z</date></snapshot>",
            "<snapshot><type>odd</type><num>1</num><date>2026-11-22 02:55:00</date></snapshot>",
            "<snapshot><type>single</type><num>0</num><date>2026-11-22 02:55:00</date></snapshot>",
            "<snapshot><type>single</type><date>2026-11-22 02:55:00</date></snapshot>",
            "<snapshot><type>single</type>",
        ] {
            assert!(SnapshotInfo::from_xml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn userdata_rules_match_snappers_cli() {
        assert!(validate_userdata("a", "b").is_ok());
        assert!(validate_userdata("", "b").is_err());
        assert!(validate_userdata("a=b", "c").is_err());
        assert!(validate_userdata("a", "b,c").is_err());
    }
}
