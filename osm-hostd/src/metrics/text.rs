//! The Prometheus text exposition format (version 0.0.4): one family at a time, its
//! `# HELP` and `# TYPE` lines first, then its samples.

use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

/// Builds one exposition. Families must be started before their samples are added.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample; `labels` are (name, value) pairs.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        push_value(&mut self.out, value);
        self.out.push('\n');
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn push_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v}");
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_help_type_and_samples() {
        let mut e = Exposition::default();
        e.family("osmhost_x_bytes", Kind::Gauge, "A size.\nSecond line")
            .sample("osmhost_x_bytes", &[("container", "a\"b")], 1024.0)
            .sample("osmhost_x_bytes", &[], 0.5);
        e.family("osmhost_y_total", Kind::Counter, "Count.").sample(
            "osmhost_y_total",
            &[("a", "1"), ("b", "2")],
            3.0,
        );
        assert_eq!(
            e.finish(),
            "# HELP osmhost_x_bytes A size.\\nSecond line\n\
             # TYPE osmhost_x_bytes gauge\n\
             osmhost_x_bytes{container=\"a\\\"b\"} 1024\n\
             osmhost_x_bytes 0.5\n\
             # HELP osmhost_y_total Count.\n\
             # TYPE osmhost_y_total counter\n\
             osmhost_y_total{a=\"1\",b=\"2\"} 3\n"
        );
    }

    #[test]
    fn large_and_special_values() {
        let mut s = String::new();
        push_value(&mut s, 1.0e18);
        s.push(' ');
        push_value(&mut s, f64::INFINITY);
        s.push(' ');
        push_value(&mut s, 1_700_000_000.0);
        assert_eq!(s, "1000000000000000000 +Inf 1700000000");
    }
}
