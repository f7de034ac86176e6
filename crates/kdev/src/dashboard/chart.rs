//! What sleeping saved, as the dashboard draws it: CPU-hours asleep per
//! day over the last 30 days, stacked by environment, as SVG written on
//! the server (no script, no library, no CDN: the page stays one answer
//! that works without script and under a strict CSP).

use std::fmt::Write as _;

use super::page::esc;
use crate::envs::savings::Saved;
use kdev_contract::envs::savings::Hours;

/// Environments drawn each in a colour of their own; the rest are one
/// "other" band, so the legend stays readable with hundreds.
const NAMED: usize = 8;
/// Colours that stay apart for the common colour blindnesses (Okabe–Ito),
/// and a grey for "other".
const COLOURS: [&str; NAMED] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
];
const OTHER: &str = "#999999";

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 20.0;

/// The savings section: totals over 7 and 30 days and the chart.
pub fn section(saved: &[&Saved]) -> String {
    let total = |pick: fn(&Saved) -> Hours| {
        saved
            .iter()
            .map(|s| pick(s))
            .fold(Hours::default(), Hours::plus)
    };
    let (week, month) = (total(|s| s.last_7_days), total(|s| s.last_30_days));
    let mut out = String::from("<section id=\"savings\" aria-labelledby=\"savings-title\">");
    let _ = write!(
        out,
        "<h2 id=\"savings-title\">What sleeping saved</h2>\
<p class=\"sub\">Asleep in the environments shown: last 7 days <b>{:.1}</b> CPU-hours, <b>{:.1}</b> GiB-hours of memory, <b>{:.1}</b> pod-hours; \
last 30 days <b>{:.1}</b> CPU-hours, <b>{:.1}</b> GiB-hours, <b>{:.1}</b> pod-hours (requests of the pods kdev's sleeps removed; <code>kdev envs --savings</code>).</p>",
        week.cpu, week.memory_gib, week.pods, month.cpu, month.memory_gib, month.pods
    );
    out.push_str(&svg(saved));
    out.push_str("</section>");
    out
}

/// The chart: one bar per day, each environment a band of it.
pub fn svg(saved: &[&Saved]) -> String {
    let days: Vec<&str> = saved
        .first()
        .map(|s| s.daily.iter().map(|d| d.day.as_str()).collect())
        .unwrap_or_default();
    // The environments that saved most have colours; the rest are "other".
    let mut ranked: Vec<&Saved> = saved
        .iter()
        .copied()
        .filter(|s| s.last_30_days.cpu > 0.0)
        .collect();
    ranked.sort_by(|a, b| {
        b.last_30_days
            .cpu
            .total_cmp(&a.last_30_days.cpu)
            .then(a.namespace.cmp(&b.namespace))
    });
    let (named, rest) = ranked.split_at(ranked.len().min(NAMED));
    let mut bands: Vec<(String, &str, Vec<f64>)> = named
        .iter()
        .zip(COLOURS)
        .map(|(s, colour)| {
            (
                s.namespace.clone(),
                colour,
                s.daily.iter().map(|d| d.hours.cpu).collect(),
            )
        })
        .collect();
    if !rest.is_empty() {
        let mut other = vec![0.0; days.len()];
        for s in rest {
            for (sum, d) in other.iter_mut().zip(&s.daily) {
                *sum += d.hours.cpu;
            }
        }
        bands.push((format!("{} other environments", rest.len()), OTHER, other));
    }
    let highest = (0..days.len())
        .map(|i| bands.iter().map(|b| b.2[i]).sum::<f64>())
        .fold(0.0, f64::max);
    let top = nice_ceiling(highest);
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg id=\"savings-chart\" role=\"img\" aria-labelledby=\"savings-chart-title\" viewBox=\"0 0 {WIDTH} {}\" width=\"100%\" style=\"max-width:{WIDTH}px\">\
<title id=\"savings-chart-title\">CPU-hours asleep per day, last {} days, by environment</title>",
        HEIGHT + BOTTOM + 8.0,
        days.len()
    );
    let plot = WIDTH - LEFT;
    let slot = if days.is_empty() {
        plot
    } else {
        plot / days.len() as f64
    };
    // Axis: 0, half and the top, in CPU-hours.
    for fraction in [0.0, 0.5, 1.0] {
        let y = HEIGHT - fraction * HEIGHT + 4.0;
        let _ = write!(
            out,
            "<line x1=\"{LEFT}\" x2=\"{WIDTH}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            LEFT - 4.0,
            y + 3.0,
            trim(top * fraction)
        );
    }
    for (i, day) in days.iter().enumerate() {
        let x = LEFT + i as f64 * slot + 1.0;
        let mut y = HEIGHT + 4.0;
        for (name, colour, values) in &bands {
            let value = values[i];
            if value <= 0.0 || top <= 0.0 {
                continue;
            }
            let height = value / top * HEIGHT;
            y -= height;
            let _ = write!(
                out,
                "<rect class=\"saved\" data-env=\"{}\" data-day=\"{day}\" x=\"{x:.1}\" y=\"{y:.2}\" width=\"{:.1}\" height=\"{height:.2}\" fill=\"{colour}\"><title>{}, {day}: {value:.1} CPU-hours</title></rect>",
                esc(name),
                (slot - 2.0).max(1.0),
                esc(name),
            );
        }
        // Every 7th day, and the last, named under its bar.
        if i % 7 == 0 || i + 1 == days.len() {
            let _ = write!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
                x + slot / 2.0,
                HEIGHT + BOTTOM,
                day.get(5..).unwrap_or(day)
            );
        }
    }
    out.push_str("</svg>");
    if bands.is_empty() {
        out.push_str(
            "<p class=\"sub\">Nothing asleep in the last 30 days, or nothing recorded yet.</p>",
        );
    } else {
        out.push_str("<ul class=\"legend\">");
        for (name, colour, values) in &bands {
            let _ = write!(
                out,
                "<li><span style=\"background:{colour}\" aria-hidden=\"true\"></span>{} ({:.1} CPU-hours)</li>",
                esc(name),
                values.iter().sum::<f64>()
            );
        }
        out.push_str("</ul>");
    }
    out
}

/// The smallest of 1, 2 or 5 times a power of ten at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|c| *c >= value)
        .unwrap_or(10.0 * power)
}

fn trim(value: f64) -> String {
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envs::savings::saved;
    use kdev_contract::envs::savings::{Amount, Ledger, SAVINGS_ANNOTATION};
    use std::collections::BTreeMap;

    fn env(name: &str, cpu_millis: u64) -> Saved {
        let ledger = Ledger::default()
            .record(
                "2026-12-05T00:00:00Z".parse().unwrap(),
                Amount {
                    pods: 1,
                    cpu_millis,
                    memory_bytes: 1 << 30,
                },
            )
            .record("2026-12-06T00:00:00Z".parse().unwrap(), Amount::default());
        let annotations = BTreeMap::from([(SAVINGS_ANNOTATION.to_owned(), ledger.text())]);
        saved(name, &annotations, "2026-12-07T12:00:00Z".parse().unwrap()).unwrap()
    }

    #[test]
    fn each_day_is_a_bar_stacked_by_environment_with_the_most_saving_named() {
        let envs: Vec<Saved> = (0..10)
            .map(|i| env(&format!("team-{i}"), 1000 + i * 100))
            .collect();
        let refs: Vec<&Saved> = envs.iter().collect();
        let svg = svg(&refs);
        // One band per named environment on 2026-12-05, and one "other".
        assert_eq!(svg.matches("data-day=\"2026-12-05\"").count(), NAMED + 1);
        assert!(
            svg.contains("data-env=\"team-9\""),
            "the most saving is named"
        );
        assert!(
            !svg.contains("data-env=\"team-0\""),
            "the least is in other"
        );
        assert!(svg.contains("2 other environments"));
        assert!(svg.contains("team-9, 2026-12-05: 45.6 CPU-hours"), "{svg}");
        assert_eq!(
            svg.matches("<rect").count(),
            NAMED + 1,
            "no other day saved"
        );
    }

    #[test]
    fn names_from_the_cluster_are_escaped_and_nothing_saved_says_so() {
        let a = env("a<b", 500);
        let svg = svg(&[&a]);
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"), "{svg}");
        let none = svg_of_nothing();
        assert!(none.contains("Nothing asleep"), "{none}");
    }

    fn svg_of_nothing() -> String {
        let empty = saved(
            "quiet",
            &BTreeMap::new(),
            "2026-12-07T12:00:00Z".parse().unwrap(),
        )
        .unwrap();
        svg(&[&empty])
    }

    #[test]
    fn the_axis_tops_at_a_round_figure() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(45.6), 50.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
    }
}
