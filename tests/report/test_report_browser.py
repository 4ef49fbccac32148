"""index.html in a real browser (headless Chromium, Debian's `chromium` package): opened from
file:// it logs nothing to the console, every image loads, and the paper / verdict filter shows
what it should (also when the filter comes from the URL's hash). No selenium or playwright: a
copy of the page gets a probe script that writes its findings into the DOM, which
`chromium --dump-dom` prints; console messages come from `--enable-logging=stderr`.

Slow (several browser starts): `pytest -m slow tests/report/test_report_browser.py`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from reportkit import SLEEPY, second_paper, two_profile_store

from ssmlab.report.render import write_report
from ssmlab.runner.store import Store

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="no /usr/bin/chromium (Debian: apt-get "
                       "install chromium); the browser check needs it"),
]

# Installed first in <head>: records uncaught errors and console.error / console.warn calls.
CATCH = """<script>window.__errors=[];
window.addEventListener('error',function(e){window.__errors.push('error: '+(e.message||
  (e.target&&(e.target.src||e.target.href))||e.type));},true);
['error','warn'].forEach(function(k){var f=console[k];console[k]=function(){
  window.__errors.push(k+': '+Array.prototype.join.call(arguments,' '));f.apply(console,arguments);};});
</script>"""

# Appended at the end of <body>: after load, checks the images and drives the filter.
PROBE = """<script>window.addEventListener('load',function(){
  var r={}, fp=document.getElementById('f-paper'), fv=document.getElementById('f-verdict');
  function rows(){return document.querySelectorAll('#claims tr[data-verdicts]:not([hidden])').length;}
  function cards(){return document.querySelectorAll('.claim:not([hidden])').length;}
  function sections(){return Array.prototype.filter.call(document.querySelectorAll('section.exp'),
    function(s){return !s.hidden;}).map(function(s){return s.querySelector('h2').textContent;});}
  function set(p,v){fp.value=p; fv.value=v; fv.dispatchEvent(new Event('change'));}
  var imgs=Array.prototype.slice.call(document.images);
  r.images=imgs.length;
  r.broken=imgs.filter(function(i){return !(i.complete&&i.naturalWidth>0);})
    .map(function(i){return i.getAttribute('src');});
  r.initial={rows:rows(), cards:cards(), sections:sections(), paper:fp.value, verdict:fv.value};
  set('','FAIL');
  r.fail={rows:rows(), cards:cards(), sections:sections(), hash:location.hash,
          count:document.getElementById('f-count').textContent};
  set('','INCONCLUSIVE'); r.inconclusive={rows:rows(), sections:sections()};
  set('filtering',''); r.filtering={rows:rows(), cards:cards(), sections:sections(),
    counts:document.querySelectorAll('tr.count:not([hidden])').length};
  set('builtin','SKIP'); r.builtin_skip={rows:rows(), cards:cards()};
  document.getElementById('f-reset').click(); r.reset={rows:rows(), cards:cards()};
  r.errors=window.__errors;
  var pre=document.createElement('pre'); pre.id='probe-result';
  pre.textContent=JSON.stringify(r); document.body.appendChild(pre);
});</script>"""


def chromium(url: str, tmp: Path) -> tuple[str, list[str]]:
    """(the DOM after load, the console lines Chromium logged)."""
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
         "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    return proc.stdout, console


def probe(page: Path, tmp: Path, fragment: str = "") -> dict:
    """Open a probed copy of `page` (beside it, so relative image paths resolve)."""
    text = page.read_text()
    probed = page.with_name("probe-" + page.name)
    probed.write_text(text.replace("<head>", "<head>" + CATCH, 1)
                      .replace("</body>", PROBE + "</body>", 1))
    dom, console = chromium(probed.as_uri() + fragment, tmp)
    m = re.search(r"<pre id=\"probe-result\">(.*?)</pre>", dom, re.S)
    assert m, f"the probe did not run: {dom[-1500:]} {console}"
    result = json.loads(m.group(1).replace("&amp;", "&").replace("&lt;", "<")
                        .replace("&gt;", ">").replace("&quot;", '"'))
    result["console"] = console
    return result


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    res = tmp_path_factory.mktemp("browser")
    two_profile_store(res)
    second_paper(res)
    with Store.open(res) as st:
        return write_report(st, res)


def test_page_logs_nothing_and_every_image_loads(report, tmp_path):
    _, console = chromium((report / "index.html").as_uri(), tmp_path)
    assert console == []
    r = probe(report / "index.html", tmp_path)
    assert r["errors"] == [] and r["console"] == []
    # 4 sleepy claims (quick) + 2 filtering claims carry figures; the other figures of the
    # sleepy folder (absent from the shown claims: extra.png is the paper config's) none
    assert r["images"] == 6 and r["broken"] == []


def test_filters_work_in_the_browser(report, tmp_path):
    r = probe(report / "index.html", tmp_path)
    # papers in report order (filtering before builtin); shown: filtering ordering PASS and
    # locality FAIL, flaky (PASS), sleepy quick total FAIL|PASS, slope INCONCLUSIVE|PASS, absent SKIP,
    # wrong FAIL|FAIL
    assert r["initial"] == {"rows": 7, "cards": 7, "paper": "", "verdict": "",
                            "sections": ["filtering/fake", "builtin/test_flaky", SLEEPY]}
    assert r["fail"] == {"rows": 3, "cards": 3, "sections": ["filtering/fake", SLEEPY],
                         "hash": "#verdict=FAIL", "count": "3 claim(s) shown"}
    assert r["inconclusive"] == {"rows": 1, "sections": [SLEEPY]}
    assert r["filtering"] == {"rows": 2, "cards": 2, "sections": ["filtering/fake"], "counts": 1}
    assert r["builtin_skip"] == {"rows": 1, "cards": 1}
    assert r["reset"] == {"rows": 7, "cards": 7}
    assert r["errors"] == [] and r["console"] == []


def test_filter_from_the_url_hash(report, tmp_path):
    r = probe(report / "index.html", tmp_path, "#paper=filtering&verdict=FAIL")
    assert r["initial"] == {"rows": 1, "cards": 1, "paper": "filtering", "verdict": "FAIL",
                            "sections": ["filtering/fake"]}
    r = probe(report / "index.html", tmp_path, "#paper=nopaper")  # unknown: ignored
    assert r["initial"]["rows"] == 7 and r["errors"] == []


def test_the_probe_sees_a_broken_image_and_a_script_error(report, tmp_path):
    """The checks above can fail: a copy with a missing figure and a throwing script."""
    bad = tmp_path / "bad"
    shutil.copytree(report, bad)
    page = bad / "index.html"
    page.write_text(page.read_text().replace(
        "</body>", "<img src='figures/missing.png'><script>undefinedFn()</script></body>", 1))
    _, console = chromium(page.as_uri(), tmp_path)
    assert any("undefinedFn" in line for line in console)
    r = probe(page, tmp_path)
    assert r["broken"] == ["figures/missing.png"]
    assert any("undefinedFn" in e for e in r["errors"])
