"""GET /admin/preview: the real snippet as a region's visitors see it, in several languages."""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass
from urllib.parse import urlencode

from babel import Locale, UnknownLocaleError
from jinja2 import Environment, Template
from starlette.requests import Request
from starlette.responses import HTMLResponse

from gateway.core import paths
from gateway.core.errors import NotFound
from gateway.core.jurisdictions import SiteRules
from gateway.core.model import Region, ResolvedBanner, Rule
from gateway.serving.gateway import Gateway, parse_region_param
from gateway.sites.catalog import SiteBundle
from gateway.web.auth import authorize

MAX_LOCALES = 6  # side by side; more would not fit a screen
UNLISTED_REGION = "ZZ"  # ISO 3166 user-assigned "unknown": no table lists it, so it fails closed


@dataclass(frozen=True)
class Column:
    """One locale of the preview: what was asked, what is served, and what fell back."""

    requested: str
    locale: str
    label: str
    resolved: ResolvedBanner
    fallbacks: tuple[str, ...]
    frame: str  # the iframe's srcdoc


def _label(locale: str) -> str:
    try:
        parsed = Locale.parse(locale)
    except (UnknownLocaleError, ValueError):
        return locale
    own = parsed.get_display_name(locale) or locale
    english = parsed.get_display_name("en") or locale
    return own if own == english else f"{own} · {english}"


def example_region(rule_id: str, site_rules: SiteRules) -> str | None:
    """A region whose visitors get this rule (site overrides included), for the rule selector."""
    overrides = site_rules.overrides
    codes = [*site_rules.table.regions, *(k for k in overrides if k != "*"), UNLISTED_REGION]
    for code in codes:
        country, _, sub = code.partition("-")
        rule = site_rules.rule(Region(country, sub or None, "query"))
        if rule.id == rule_id or rule.id.split("+")[0] == rule_id:
            return code
    return None


def purpose_fallbacks(bundle: SiteBundle, locale: str) -> tuple[str, ...]:
    """Purpose names and descriptions that the locale's catalog does not translate."""
    if locale == bundle.site.default_locale:
        return ()
    has = bundle.translations.has
    out = []
    for p in bundle.site.purposes:
        out += [
            f"purpose {p.id}: {part}"
            for part, msgid in (("name", p.name), ("description", p.description))
            if not has(locale, msgid)
        ]
    return tuple(out)


def frame_document(bundle: SiteBundle, script_url: str, gpc: bool, parts_url: str = "") -> str:
    """A blank page that loads the public snippet exactly as a site would embed it."""
    cookie = bundle.site.cookie.name
    # Clearing the consent cookie makes the banner show on every load; the CSP blocks the
    # snippet's record POSTs so that clicking around in a preview never creates records, and
    # lets it fetch its parts (``parts_url``, the absolute URL of the parts folder: the
    # preferences panel).
    connect = html.escape(parts_url, quote=True) if parts_url else "'none'"
    gpc_js = "Object.defineProperty(navigator,'globalPrivacyControl',{value:true});" if gpc else ""
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="connect-src {connect}">'
        "<style>body{margin:0;min-height:100vh;font:14px system-ui,sans-serif;color:#8a8f98;"
        "background:#f4f5f7}.fake{padding:18px}.fake i{display:block;height:10px;margin:10px 0;"
        "background:#e2e4e8;border-radius:5px}</style></head><body>"
        '<div class="fake">Your page<i></i><i style="width:80%"></i><i style="width:60%"></i>'
        "</div><script>"
        f'document.cookie="{cookie}=; Max-Age=0; Path=/";'
        # The snippet keeps a copy of the choice in localStorage too (cg_state).
        'try{["cg_queue","cg_state","cg_sync"].forEach(k=>localStorage.removeItem(k))}catch(e){}'
        f"{gpc_js}</script>"
        f'<script src="{script_url}"></script></body></html>'
    )


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Preview · {{ site.name }}</title>
<style>
:root{--ink:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#f6f8fa;--accent:#0b57d0;--warn:#fff1c2;
--warn-ink:#7a4d00;--ok:#dafbe1;--ok-ink:#116329}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--ink);
background:var(--bg)}
header{background:#fff;border-bottom:1px solid var(--line);padding:14px 24px}
h1{font-size:18px;margin:0 0 10px}
form{display:flex;flex-wrap:wrap;gap:10px 18px;align-items:end}
label{display:flex;flex-direction:column;font-size:12px;color:var(--muted);gap:3px}
input[type=text],select{font:inherit;padding:5px 8px;border:1px solid var(--line);
border-radius:6px;background:#fff;min-width:120px}
fieldset{border:1px solid var(--line);border-radius:6px;padding:4px 10px;margin:0}
legend{font-size:12px;color:var(--muted)}
fieldset label{display:inline-flex;flex-direction:row;align-items:center;gap:4px;margin-right:10px;
color:var(--ink);font-size:13px}
button{font:inherit;padding:6px 16px;border:0;border-radius:6px;background:var(--accent);
color:#fff;cursor:pointer}
.facts{display:flex;flex-wrap:wrap;gap:6px 22px;padding:12px 24px;margin:0;
background:#fff;border-bottom:1px solid var(--line)}
.facts div{display:flex;gap:6px}.facts dt{color:var(--muted)}.facts dd{margin:0;font-weight:600}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
.notice{margin:12px 24px 0;padding:8px 12px;border-radius:6px;background:var(--warn);
color:var(--warn-ink)}
main{display:flex;flex-wrap:wrap;align-items:flex-start;gap:18px;padding:18px 24px}
section{background:#fff;border:1px solid var(--line);border-radius:8px;width:440px;
overflow:hidden}
section h2{font-size:15px;margin:0;padding:10px 14px;border-bottom:1px solid var(--line)}
section h2 small{font-weight:400;color:var(--muted)}
iframe{display:block;width:100%;height:520px;border:0;border-bottom:1px solid var(--line)}
.status{padding:8px 14px;font-size:13px}
.status.ok{background:var(--ok);color:var(--ok-ink)}
.status.fb{background:var(--warn);color:var(--warn-ink)}
details{padding:6px 14px 12px}summary{cursor:pointer;color:var(--muted)}
table{border-collapse:collapse;width:100%;font-size:12px;margin-top:6px}
td{border-top:1px solid var(--line);padding:3px 4px;vertical-align:top}
td:first-child{white-space:nowrap;color:var(--muted)}
tr.fallback td{background:var(--warn)}
</style></head><body>
<header><h1>Banner preview</h1>
<form method="get" action="">
<label>Site<select name="site">{% for s in sites %}<option value="{{ s }}"
{%- if s == site.id %} selected{% endif %}>{{ s }}</option>{% endfor %}</select></label>
<label>Region<input type="text" name="region" value="{{ region_param }}" list="regions"
 placeholder="detected" size="8"></label>
<datalist id="regions">{% for code, rid in regions %}<option value="{{ code }}">{{ rid }}
</option>{% endfor %}</datalist>
<label>Rule<select name="rule"><option value="">from the region</option>
{%- for rid, r in rules %}<option value="{{ rid }}"{% if rid == rule_param %} selected{% endif %}>
{{- rid }} · {{ r.model }}</option>{% endfor %}</select></label>
<fieldset><legend>Languages</legend>{% for loc in site.locales %}<label><input type="checkbox"
 name="lang" value="{{ loc }}"{% if loc in chosen %} checked{% endif %}>{{ loc }}</label>
{%- endfor %}</fieldset>
<label><span>GPC</span><span><input type="checkbox" name="gpc" value="1"
{%- if gpc %} checked{% endif %}> Sec-GPC: 1</span></label>
<button type="submit">Show</button>
</form></header>
<dl class="facts">
<div><dt>site</dt><dd>{{ site.name }} <code>{{ site.id }}</code></dd></div>
<div><dt>region</dt><dd>{{ region.code or "unknown" }}
 <small>({{ region.source }})</small></dd></div>
<div><dt>rule</dt><dd><code>{{ rule.id }}</code> {{ rule.model }}
{%- if rule.name %} · {{ rule.name }}{% endif %}</dd></div>
<div><dt>flags</dt><dd>{{ flags or "none" }}</dd></div>
<div><dt>banner_version</dt><dd><code>{{ bundle.banner_version }}</code></dd></div>
<div><dt>consent_revision</dt><dd><code>{{ bundle.consent_revision }}</code></dd></div>
</dl>
{% for note in notices %}<p class="notice">{{ note }}</p>{% endfor %}
<main>{% for col in columns %}<section>
<h2>{{ col.label }} <small><code>{{ col.locale }}</code>{% if col.requested != col.locale %}
 (asked for {{ col.requested }}){% endif %}</small></h2>
<iframe title="banner in {{ col.locale }}" srcdoc="{{ col.frame }}"></iframe>
{% if col.fallbacks %}<p class="status fb">{{ col.fallbacks | length }} text(s) shown in
 {{ site.default_locale }}, not translated: {{ col.fallbacks | join(", ") }}</p>
{% elif col.locale == site.default_locale %}<p class="status ok">Default language</p>
{% else %}<p class="status ok">Every text is translated</p>{% endif %}
<details{% if col.fallbacks %} open{% endif %}><summary>Texts</summary><table>
{%- for key, text in col.resolved.texts.items() %}
<tr{% if key in col.fallbacks %} class="fallback"{% endif %}><td>{{ key }}</td><td>{{ text }}</td>
</tr>{% endfor %}</table></details>
</section>{% endfor %}</main>
</body></html>
"""


@functools.cache
def _page() -> Template:
    return Environment(autoescape=True).from_string(PAGE)


def _chosen_locales(bundle: SiteBundle, requested: list[str]) -> list[str]:
    if requested:
        return list(dict.fromkeys(requested))[:MAX_LOCALES]
    site = bundle.site
    others = [loc for loc in site.locales if loc != site.default_locale]
    return [site.default_locale, *others[:1]]


def _region_and_rule(
    request: Request, gateway: Gateway, bundle: SiteBundle, notices: list[str]
) -> tuple[Region, Rule, str]:
    params = request.query_params
    site_rules = bundle.rules
    region_param = params.get("region", "").strip()
    rule_param = params.get("rule", "").strip()
    if rule_param and rule_param not in site_rules.table.rules:
        notices.append(f"unknown rule {rule_param!r}; showing the region's rule")
        rule_param = ""
    if rule_param:
        region_rule = None
        if region_param:
            region_rule = site_rules.rule(parse_region_param(region_param))
        if region_rule is None or region_rule.id.split("+")[0] != rule_param:
            example = example_region(rule_param, site_rules)
            if example is None:
                notices.append(f"no region gets the rule {rule_param!r} on this site")
            else:
                if region_param:
                    notices.append(
                        f"{region_param} does not get the rule {rule_param!r}; "
                        f"showing a visitor in {example}"
                    )
                region_param = example
    if region_param:
        region = parse_region_param(region_param)
    else:
        peer = request.client.host if request.client else None
        region = gateway.locator.locate(peer, request.headers)[1]
    return region, site_rules.rule(region), region_param


async def preview(request: Request) -> HTMLResponse:
    """The preview page; only the page needs the admin token, the framed snippet is public."""
    authorize(request)
    gateway: Gateway = request.app.state.gateway
    sites = sorted(b.site.id for b in gateway.catalog)
    site_id = request.query_params.get("site") or (sites[0] if sites else "")
    bundle = gateway.catalog.get(site_id)
    if bundle is None:
        raise NotFound("unknown_site", f"no site named {site_id[:64]!r}")
    notices: list[str] = []
    if gateway.catalog.last_error:
        notices.append(
            f"the last reload was refused, this is the previous version: "
            f"{gateway.catalog.last_error}"
        )
    region, rule, region_param = _region_and_rule(request, gateway, bundle, notices)
    gpc = request.query_params.get("gpc") == "1"
    columns = []
    asked = request.query_params.getlist("lang")
    if len(set(asked)) > MAX_LOCALES:
        notices.append(f"showing the first {MAX_LOCALES} of {len(set(asked))} languages")
    for requested in _chosen_locales(bundle, asked):
        locale = bundle.negotiator.choose(None, requested)
        resolved = gateway.renderer.resolve(bundle, rule, locale, gpc)
        query = {"lang": locale, **({"region": region_param} if region_param else {})}
        url = f"{paths.url(paths.SNIPPET, site=bundle.site.id)}?{urlencode(query)}"
        parts_url = f"{request.url.scheme}://{request.headers.get('host', '')}" + paths.url(
            paths.PART, site=bundle.site.id, part=""
        )
        columns.append(
            Column(
                requested=requested,
                locale=locale,
                label=_label(locale),
                resolved=resolved,
                fallbacks=resolved.fallbacks + purpose_fallbacks(bundle, locale),
                frame=frame_document(bundle, url, gpc, parts_url),
            )
        )
    flags = ", ".join(
        k
        for k, v in rule.as_json().items()
        if v is True
        and k
        in (
            "gpc",
            "reject_on_first_layer",
            "do_not_sell_link",
            "limit_sensitive_link",
            "default_granted",
        )
    )
    html = _page().render(
        site=bundle.site,
        sites=sites,
        bundle=bundle,
        region=region,
        rule=rule,
        flags=flags,
        region_param=region_param,
        rule_param=request.query_params.get("rule", ""),
        regions=sorted(bundle.rules.table.regions.items()),
        rules=bundle.rules.table.rules.items(),
        chosen=[c.locale for c in columns],
        gpc=gpc,
        columns=columns,
        notices=notices,
    )
    return HTMLResponse(
        html, headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    )
