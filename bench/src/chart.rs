//! The SVG chart, written by hand: one block per figure, one horizontal bar per implementation,
//! normalised to the best implementation of that figure = 1.0 (for "lower is better" figures the
//! score is best ÷ value). The axis is logarithmic, from 1/1000 to 1, because the implementations
//! differ by up to three orders of magnitude; each bar is labelled with its median and its score.

use crate::report::{cell, columns, fmt_value, in_row};
use crate::runner::Results;
use crate::spec::{BENCHES, Group, Impl};
use std::fmt::Write as _;

const WIDTH: f64 = 980.0;
const LABEL_W: f64 = 250.0; // figure and implementation names
const BAR_X: f64 = LABEL_W + 10.0;
const BAR_W: f64 = 470.0; // the 1/1000 .. 1 axis
const BAR_H: f64 = 13.0;
const DECADES: f64 = 3.0;

/// x of a score on the log axis.
fn x_of(score: f64) -> f64 {
    let s = score.clamp(10f64.powf(-DECADES), 1.0);
    BAR_X + BAR_W * (s.log10() + DECADES) / DECADES
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn label(imp: Impl, group: Group) -> &'static str {
    match (imp, group) {
        (Impl::Raw, _) => "raw (OS limit)",
        (i, _) => i.id(),
    }
}

pub fn render(groups: &[Group], results: &Results) -> String {
    let mut body = String::new();
    let mut y = 70.0;
    for &group in groups {
        let _ =
            writeln!(body, r#"<text x="10" y="{y}" class="group">{}</text>"#, esc(group.title()));
        y += 12.0;
        for bench in BENCHES.iter().filter(|b| b.group == group) {
            for f in bench.figures {
                let bars: Vec<(Impl, f64)> = columns(group)
                    .into_iter()
                    .filter(|&i| in_row(bench, i))
                    .filter_map(|i| cell(results, bench, i, f.key, f.better).map(|v| (i, v)))
                    .collect();
                let Some(best) = f.better.best(bars.iter().map(|b| b.1)) else { continue };
                y += 22.0;
                let title = if bench.figures.len() > 1 {
                    format!("{}: {}", bench.id, f.label)
                } else {
                    f.label.into()
                };
                let _ = writeln!(
                    body,
                    r#"<text x="10" y="{y}" class="fig">{} <tspan class="dim">({}, {} is better)</tspan></text>"#,
                    esc(&title),
                    esc(f.unit),
                    f.better.word()
                );
                y += 4.0;
                for (imp, v) in bars {
                    let score = f.better.score(v, best);
                    let x1 = x_of(score).max(BAR_X + 1.5);
                    let _ = writeln!(
                        body,
                        r#"<text x="{}" y="{}" class="impl">{}</text><rect x="{BAR_X}" y="{y}" width="{:.1}" height="{BAR_H}" fill="{}"/><text x="{}" y="{}" class="val">{} {} · {}</text>"#,
                        LABEL_W,
                        y + BAR_H - 2.5,
                        label(imp, group),
                        x1 - BAR_X,
                        imp.colour(),
                        x1 + 5.0,
                        y + BAR_H - 2.5,
                        esc(&fmt_value(v)),
                        esc(f.unit),
                        if score >= 0.9995 { "best".to_string() } else { format!("{score:.3}") },
                    );
                    y += BAR_H + 3.0;
                }
            }
        }
        y += 26.0;
    }
    let height = y + 10.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        "<style>.title{{font-size:16px;font-weight:bold}} .group{{font-size:14px;font-weight:bold}} \
         .fig{{font-size:12px;font-weight:bold}} .dim{{font-weight:normal;fill:#666}} \
         .impl{{font-size:11px;text-anchor:end}} .val{{font-size:11px}} .axis{{font-size:10px;fill:#666;text-anchor:middle}}</style>"
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="22" class="title">greenhub vs its peers: each figure normalised to the best implementation = 1.0 (log scale)</text>"#
    );
    for d in 0..=DECADES as i32 {
        let score = 10f64.powi(d - DECADES as i32);
        let x = x_of(score);
        let text = if d == DECADES as i32 {
            "1 (best)".to_string()
        } else {
            format!("1/{}", 10i32.pow((DECADES as i32 - d) as u32))
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{x}" y1="48" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="44" class="axis">{text}</text>"##,
            height - 10.0
        );
    }
    svg.push_str(&body);
    svg.push_str("</svg>\n");
    svg
}
