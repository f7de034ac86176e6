//! The dashboard's HTML: one server-rendered page that reads without
//! JavaScript, plus a few lines of script that apply live updates and send
//! the forms without a reload. Pure: rows in, text out.

use std::fmt::Write as _;

use super::view::Row;
use crate::envs::State;

/// The most rows a page shows; `?page=N` shows the others. The summary
/// counts them all.
pub const PAGE_ROWS: usize = 100;

/// The rows of page `page` (1-based; past the last, the last).
pub fn window(rows: &[Row], page: usize) -> &[Row] {
    let page = page.clamp(1, pages(rows.len()));
    let start = (page - 1) * PAGE_ROWS;
    &rows[start.min(rows.len())..(start + PAGE_ROWS).min(rows.len())]
}

/// How many pages `total` rows take (at least one).
pub fn pages(total: usize) -> usize {
    total.div_ceil(PAGE_ROWS).max(1)
}

/// What a page is rendered with besides its rows.
pub struct Page<'a> {
    /// Every row the filters keep; the page shows its window of them.
    pub rows: &'a [Row],
    /// Which window (1-based).
    pub page: usize,
    /// The filters as given (shown back in the form).
    pub selector: &'a str,
    pub owner: &'a str,
    /// A message from the last action (after a form post without script).
    pub said: Option<&'a str>,
    /// A filter the API server refused, said instead of rows.
    pub problem: Option<&'a str>,
    /// The token every form carries back.
    pub csrf: &'a str,
    /// What sleeping saved, drawn ([`super::chart::section`]).
    pub savings: &'a str,
}

/// Text for HTML, in element content and in quoted attributes.
pub fn esc(text: &str) -> String {
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

pub fn state_word(state: State) -> &'static str {
    match state {
        State::Awake => "awake",
        State::Waking => "waking",
        State::Asleep => "asleep",
        State::Partly => "partly",
        State::Empty => "empty",
    }
}

/// "12 environments: 3 awake, 8 asleep, 1 waking".
pub fn summary(rows: &[Row]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for row in rows {
        let word = state_word(row.env.state);
        match counts.iter_mut().find(|(w, _)| *w == word) {
            Some((_, n)) => *n += 1,
            None => counts.push((word, 1)),
        }
    }
    let plural = if rows.len() == 1 { "" } else { "s" };
    let parts: Vec<String> = counts.iter().map(|(w, n)| format!("{n} {w}")).collect();
    if parts.is_empty() {
        format!("{} environment{plural}", rows.len())
    } else {
        format!("{} environment{plural}: {}", rows.len(), parts.join(", "))
    }
}

/// The rows of the table (what a live update replaces).
pub fn rows(rows: &[Row], csrf: &str) -> String {
    let mut out = String::with_capacity(rows.len() * 1200);
    for row in rows {
        render_row(&mut out, row, csrf);
    }
    out
}

fn render_row(out: &mut String, row: &Row, csrf: &str) {
    let env = &row.env;
    let ns = esc(&env.namespace);
    let state = state_word(env.state);
    let _ = write!(
        out,
        "<tr id=\"env-{ns}\" data-state=\"{state}\"><th scope=\"row\">{ns}"
    );
    if let Some(owner) = &row.owner {
        let _ = write!(out, "<div class=\"sub\">owner {}</div>", esc(owner));
    }
    let _ = write!(
        out,
        "</th><td data-live><span class=\"state {state}\">{state}</span>"
    );
    for w in &env.workloads {
        if let Some(session) = &w.swap_session {
            let _ = write!(
                out,
                "<div class=\"sub\">{}/{} held by kdev swap {}</div>",
                w.kind.short(),
                esc(&w.name),
                esc(session)
            );
        }
    }
    if let Some(until) = &row.keep_awake {
        let _ = write!(
            out,
            "<div class=\"sub\">kept awake until {}</div>",
            time(until, row.now)
        );
    }
    if let Some(at) = &row.delete_at {
        let _ = write!(
            out,
            "<div class=\"bad\" role=\"note\">idle: deleted {} unless used (kdev.dev/keep keeps it)</div>",
            time(at, row.now)
        );
    }
    if let Some(why) = &row.excluded {
        let _ = write!(out, "<div class=\"sub\">excluded: {}</div>", esc(why));
    }
    out.push_str("</td><td data-live><ul>");
    for w in &env.workloads {
        let name = format!("{}/{}", w.kind.short(), esc(&w.name));
        let _ = write!(out, "<li>{name} ");
        if w.size > 0 && w.ready < w.size {
            let _ = write!(
                out,
                "<progress max=\"{}\" value=\"{}\" aria-label=\"{name} pods ready\"></progress> ",
                w.size, w.ready
            );
        }
        let _ = write!(out, "{}/{} ready", w.ready, w.size);
        if let Some(original) = w.original {
            let _ = write!(out, ", {original} before the sleep");
        }
        if let Some(why) = &w.excluded {
            let _ = write!(out, ", excluded ({})", esc(why));
        }
        out.push_str("</li>");
    }
    out.push_str("</ul></td><td data-live>");
    match &row.last {
        Some(last) => {
            let _ = write!(
                out,
                "{} {}<div class=\"sub\">{}</div>",
                esc(&last.reason),
                time(&last.at, row.now),
                esc(&last.note)
            );
        }
        None => match &env.slept {
            Some(slept) => {
                // "<instant> by <who>"
                let (at, by) = slept.split_once(" by ").unwrap_or((slept, ""));
                let _ = write!(out, "Slept {}", time(at, row.now));
                if !by.is_empty() {
                    let _ = write!(out, " by {}", esc(by));
                }
            }
            None => out.push('-'),
        },
    }
    if let Some(activity) = &env.last_activity {
        // "<RFC 3339> (who)": the instant as an age, who as said.
        let (at, who) = activity.split_once(' ').unwrap_or((activity, ""));
        let _ = write!(
            out,
            "<div class=\"sub\">last activity {} {}</div>",
            time(at, row.now),
            esc(who)
        );
    }
    out.push_str("</td><td data-live>");
    match (&env.next, &env.problem) {
        (_, Some(problem)) => {
            let _ = write!(
                out,
                "<span class=\"bad\">schedule error: {}</span>",
                esc(problem)
            );
        }
        (Some(next), None) => {
            let _ = write!(
                out,
                "{} {}<div class=\"sub\">{}</div>",
                next.to,
                time(&next.at, row.now),
                esc(&next.why)
            );
        }
        (None, None) => out.push('-'),
    }
    let _ = write!(
        out,
        "</td><td><form method=\"post\" action=\"/envs/{ns}\">\
<input type=\"hidden\" name=\"seen\" value=\"{seen}\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<label for=\"r-{ns}\">Reason</label><input id=\"r-{ns}\" name=\"reason\" required maxlength=\"200\" autocomplete=\"off\">\
<label for=\"u-{ns}\">Keep awake until</label><input id=\"u-{ns}\" name=\"until\" placeholder=\"4h\" autocomplete=\"off\">\
<div class=\"buttons\"><button name=\"action\" value=\"wake\">Wake</button>\
<button name=\"action\" value=\"sleep\">Sleep now</button>\
<button name=\"action\" value=\"keep-awake\">Keep awake</button></div></form></td></tr>",
        seen = esc(&row.seen),
        csrf = esc(csrf),
    );
}

const STYLE: &str = "body{font:16px/1.4 system-ui,sans-serif;margin:0 auto;padding:1rem;max-width:80rem;color:#111;background:#fff}\
h1{font-size:1.5rem;margin:.2rem 0}table{border-collapse:collapse;width:100%}\
th,td{text-align:left;vertical-align:top;padding:.5rem;border-bottom:1px solid #767676}\
ul{margin:0;padding-left:1rem}.sub{font-size:.875rem;color:#3b3b3b}\
h2{font-size:1.2rem;margin:1.5rem 0 .3rem}.legend{list-style:none;display:flex;flex-wrap:wrap;gap:.3rem 1rem;padding:0;font-size:.875rem}\
.legend span{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}\
.state{font-weight:600;padding:0 .3rem;border-radius:.2rem}\
.awake{background:#d6f5d6;color:#0b4d0b}.asleep{background:#dde3f0;color:#1c2d55}\
.waking{background:#fff1c2;color:#5c4300}.partly{background:#f6dcc6;color:#5a2800}.empty{background:#eee;color:#333}\
.bad{color:#8a0000}label{display:block;font-size:.875rem;margin-top:.3rem}\
input{font:inherit;padding:.3rem;border:1px solid #595959;border-radius:.2rem;width:100%;max-width:14rem}\
button{font:inherit;margin:.3rem .3rem 0 0;padding:.35rem .7rem;border:1px solid #1c2d55;border-radius:.2rem;background:#1c2d55;color:#fff;cursor:pointer}\
button:focus,input:focus{outline:3px solid #c26a00;outline-offset:2px}\
form.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end;margin:.5rem 0}\
#said{min-height:1.4rem;font-weight:600}\
@media (max-width:50rem){thead{position:absolute;left:-9999px}tr,th,td{display:block}tr{border-bottom:2px solid #111;padding:.5rem 0}th,td{border:0;padding:.2rem 0}}";

/// Applies live updates (cells marked `data-live` of each row, the rows
/// added and gone) and sends the forms without a reload. An update is the
/// same for every view with the same filter, so it carries no form token:
/// a row it adds gets the page's (its `kdev-csrf` meta). (A form's
/// `action` property is its button named "action"; the attribute is read.)
const SCRIPT: &str = "(function(){var body=document.getElementById('envs'),said=document.getElementById('said'),sum=document.getElementById('summary'),\
token=document.querySelector('meta[name=kdev-csrf]').content;\
function times(){var now=Date.now();Array.prototype.slice.call(document.querySelectorAll('time[datetime]')).forEach(function(t){\
var at=new Date(t.getAttribute('datetime')),s=Math.round((now-at)/1000),a=Math.abs(s),n=a<120?a+'s':a<7200?Math.floor(a/60)+'m':a<172800?Math.floor(a/3600)+'h':Math.floor(a/86400)+'d';\
t.textContent=s>=0?n+' ago':'in '+n;t.title=at.toLocaleString();});}times();setInterval(times,15000);\
function apply(d){var t=document.createElement('tbody');t.innerHTML=d.rows;var seen={};\
Array.prototype.slice.call(t.children).forEach(function(r){seen[r.id]=1;var o=document.getElementById(r.id);\
if(!o){var c=r.querySelector('input[name=csrf]');if(c)c.value=token;body.appendChild(r);return;}o.dataset.state=r.dataset.state;var a=o.querySelectorAll('[data-live]'),b=r.querySelectorAll('[data-live]');\
for(var i=0;i<a.length&&i<b.length;i++){if(a[i].innerHTML!==b[i].innerHTML)a[i].innerHTML=b[i].innerHTML;}\
var s=o.querySelector('input[name=seen]'),n=r.querySelector('input[name=seen]');if(s&&n)s.value=n.value;});\
Array.prototype.slice.call(body.children).forEach(function(r){if(!seen[r.id])r.remove();});sum.textContent=d.summary;times();}\
if(window.EventSource){var es=new EventSource('/events'+location.search);es.addEventListener('envs',function(e){apply(JSON.parse(e.data));});\
es.addEventListener('said',function(e){said.textContent=JSON.parse(e.data).message;});}\
document.addEventListener('submit',function(e){var f=e.target,to=f.getAttribute('action');if(!to||f.getAttribute('method')!=='post')return;e.preventDefault();\
var data=new URLSearchParams(new FormData(f));if(e.submitter&&e.submitter.name)data.set(e.submitter.name,e.submitter.value);\
said.textContent='Working...';fetch(to,{method:'POST',body:data,headers:{'Accept':'application/json'}})\
.then(function(r){return r.json();}).then(function(j){said.textContent=j.message;if(j.ok)f.reset();})\
.catch(function(err){said.textContent='The dashboard did not answer: '+err;});});})();";

/// An instant as people read it: how long ago or how soon, the instant
/// itself (UTC) on hover; the page's script says it in the viewer's zone
/// and keeps the age current. Text that is not an instant, as it is.
fn time(at: &str, now: jiff::Timestamp) -> String {
    match at.parse::<jiff::Timestamp>() {
        Ok(instant) => format!(
            "<time datetime=\"{}\" title=\"{} UTC\">{}</time>",
            instant,
            instant.strftime("%Y-%m-%d %H:%M:%S"),
            crate::envs::age(instant, now)
        ),
        Err(_) => esc(at),
    }
}

/// The whole page.
pub fn page(page: &Page<'_>) -> String {
    let mut out = String::with_capacity(page.rows.len() * 1200 + 4096);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"kdev-csrf\" content=\"{}\">\
<title>kdev environments</title><style>{STYLE}</style></head><body>\
<header><h1>Dev environments</h1><p id=\"summary\">{}</p></header>\
<form class=\"filters\" method=\"get\" action=\"/\"><div><label for=\"selector\">Namespace label selector</label>\
<input id=\"selector\" name=\"selector\" value=\"{}\" placeholder=\"team=payments\"></div>\
<div><label for=\"owner\">Owner ({})</label><input id=\"owner\" name=\"owner\" value=\"{}\"></div>\
<button>Filter</button></form><p id=\"said\" role=\"status\" aria-live=\"polite\">{}</p>",
        esc(page.csrf),
        esc(&summary(page.rows)),
        esc(page.selector),
        super::view::OWNER_LABEL,
        esc(page.owner),
        esc(page.said.unwrap_or_default()),
    );
    if let Some(problem) = page.problem {
        let _ = write!(out, "<p class=\"bad\" role=\"alert\">{}</p>", esc(problem));
    }
    let shown = window(page.rows, page.page);
    let last = pages(page.rows.len());
    if last > 1 {
        let at = page.page.clamp(1, last);
        let link = |n: usize, text: &str| {
            format!(
                "<a href=\"/?selector={}&amp;owner={}&amp;page={n}\">{text}</a>",
                esc(&super::percent_encode(page.selector)),
                esc(&super::percent_encode(page.owner)),
            )
        };
        let first = (at - 1) * PAGE_ROWS + 1;
        let _ = write!(
            out,
            "<nav class=\"sub\" aria-label=\"Pages\">Environments {first} to {} of {} (page {at} of {last}) {} {}</nav>",
            first + shown.len() - 1,
            page.rows.len(),
            if at > 1 {
                link(at - 1, "Previous")
            } else {
                String::new()
            },
            if at < last {
                link(at + 1, "Next")
            } else {
                String::new()
            },
        );
    }
    let _ = write!(
        out,
        "<table><caption class=\"sub\">Each environment is a namespace; an action asks for a reason, which goes into its Event.</caption>\
<thead><tr><th scope=\"col\">Environment</th><th scope=\"col\">State</th><th scope=\"col\">Workloads (ready/size)</th>\
<th scope=\"col\">Last sleep or wake</th><th scope=\"col\">Next</th><th scope=\"col\">Act</th></tr></thead>\
<tbody id=\"envs\">{}</tbody></table>{}<script>{SCRIPT}</script></body></html>",
        rows(shown, page.csrf),
        page.savings,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::view;
    use crate::envs::{self, workload::Workload};
    use std::collections::BTreeMap;

    fn env_row(namespace: &str, size: i32, ready: i32) -> Row {
        let w = Workload {
            kind: envs::workload::Kind::Deployment,
            namespace: namespace.into(),
            name: "web<b>".into(),
            size,
            ready,
            annotations: BTreeMap::new(),
            labels: BTreeMap::new(),
            swap_session: None,
            swap_original: None,
            created: None,
            finished: false,
        };
        let now = "2026-12-03T12:00:00Z".parse().unwrap();
        let env = envs::judge(namespace, &BTreeMap::new(), &[w], now);
        view::row(env, &BTreeMap::new(), Some("alice & bob".into()), None, now)
    }

    #[test]
    fn text_from_the_cluster_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let html = rows(&[env_row("team-a", 2, 1)], "t");
        assert!(html.contains("web&lt;b&gt;"), "{html}");
        assert!(html.contains("owner alice &amp; bob"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
    }

    #[test]
    fn a_waking_workload_shows_its_progress_and_every_input_has_a_label() {
        let html = rows(&[env_row("team-a", 2, 1)], "t");
        assert!(html.contains("data-state=\"waking\""), "{html}");
        assert!(html.contains("<progress max=\"2\" value=\"1\""), "{html}");
        assert!(html.contains("1/2 ready"), "{html}");
        for id in ["r-team-a", "u-team-a"] {
            assert!(html.contains(&format!("<label for=\"{id}\">")), "{html}");
            assert!(html.contains(&format!("id=\"{id}\"")), "{html}");
        }
        let done = rows(&[env_row("team-a", 2, 2)], "t");
        assert!(!done.contains("<progress"), "{done}");
    }

    #[test]
    fn a_page_shows_its_window_and_the_summary_counts_all() {
        let many: Vec<Row> = (0..250)
            .map(|i| env_row(&format!("ns-{i:03}"), 1, 1))
            .collect();
        assert_eq!(window(&many, 1).len(), PAGE_ROWS);
        assert_eq!(window(&many, 3).len(), 50);
        assert_eq!(window(&many, 9)[0].env.namespace, "ns-200");
        assert_eq!(window(&many, 0)[0].env.namespace, "ns-000");
        assert_eq!(window(&[], 2).len(), 0);
        let html = page(&Page {
            savings: "",
            rows: &many,
            selector: "team=a b",
            owner: "",
            said: None,
            problem: None,
            csrf: "t",
            page: 2,
        });
        assert!(html.contains("250 environments: 250 awake"), "{html}");
        assert!(
            html.contains("Environments 101 to 200 of 250 (page 2 of 3)"),
            "{html}"
        );
        assert!(
            html.contains("selector=team%3Da%20b&amp;owner=&amp;page=3\">Next"),
            "{html}"
        );
        assert!(html.contains("id=\"env-ns-150\""), "{html}");
        assert!(!html.contains("id=\"env-ns-050\""), "{html}");
    }

    #[test]
    fn the_summary_counts_states() {
        let rows = [env_row("a", 1, 1), env_row("b", 1, 1), env_row("c", 2, 0)];
        assert_eq!(summary(&rows), "3 environments: 2 awake, 1 waking");
        assert_eq!(summary(&[]), "0 environments");
    }

    #[test]
    fn the_page_reads_without_script_and_carries_the_filters_back() {
        let rows = [env_row("team-a", 1, 1)];
        let html = page(&Page {
            savings: "",
            rows: &rows,
            selector: "team=\"x\"",
            owner: "",
            said: Some("woke team-a"),
            problem: None,
            csrf: "t",
            page: 1,
        });
        assert!(html.starts_with("<!doctype html><html lang=\"en\">"));
        assert!(html.contains("value=\"team=&quot;x&quot;\""), "{html}");
        assert!(html.contains("<tr id=\"env-team-a\""), "{html}");
        assert!(html.contains("woke team-a"), "{html}");
    }

    #[test]
    fn times_read_as_ages_with_the_instant_on_hover() {
        let now: jiff::Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        assert_eq!(
            time("2026-12-03T11:48:00.123456Z", now),
            "<time datetime=\"2026-12-03T11:48:00.123456Z\" title=\"2026-12-03 11:48:00 UTC\">12m ago</time>"
        );
        assert_eq!(time("soon<b>", now), "soon&lt;b&gt;");
    }

    #[test]
    fn an_environment_to_be_deleted_for_idling_says_when_and_how_to_keep_it() {
        let now: jiff::Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        let mut row = env_row("idle", 0, 0);
        row.now = now;
        row.delete_at = Some("2026-12-05T12:00:00Z".into());
        let mut out = String::new();
        render_row(&mut out, &row, "t");
        assert!(
            out.contains("idle: deleted <time datetime=\"2026-12-05T12:00:00Z\""),
            "{out}"
        );
        assert!(
            out.contains("in 2d") && out.contains("kdev.dev/keep"),
            "{out}"
        );
    }
}
