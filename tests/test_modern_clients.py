"""The modern simple API as real clients see it: pip, uv, pdm and pypi-simple against a
real gunicorn index on a local bucket (1-7), and two, then three, instances on every
backend (8).

What a user observes, counted on the server: every request the index answers is one line
of its request log (gcs_sync/web/request_log.py: method, path, status, bytes of body);
stock pypiserver (the "before") runs under gunicorn with an access log in the same shape
(sendfile off, so gunicorn counts the bytes it writes). "Bytes to resolve" is the sum of
the bodies served while one client resolves ``a`` (a -> b -> c, c's wheel 40 MB) without
installing it. Run with ``-s`` to see the figures; they are also written to a JSON file
whose path is printed.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

from testkit.buckets import BucketProbe, LocalProbe
from testkit.packages import make_wheel
from testkit.servers import (
    REPO,
    Instance,
    clean_env,
    free_port,
    new_venv,
    run,
    start_instance,
    twine_upload,
)
from testkit.storage_servers import write_htpasswd
from testkit.wait import eventually

pytestmark = pytest.mark.slow

SYNC_INTERVAL = 1.0
FULL_SYNC_INTERVAL = 2.0
CHECK_MARGIN = 2.0  # one check's duration on a loaded machine (as tests/test_e2e.py)
SYNC_BOUND = SYNC_INTERVAL + CHECK_MARGIN
JSON_V1 = "application/vnd.pypi.simple.v1+json"
PADDING = 40 * 1024 * 1024
SERVED_LINE = re.compile(r"\b(GET|HEAD) (/\S*) (\d{3}) (\d+) B\b")


# -- what a server served -------------------------------------------------------------


class Served:
    """The requests a server logged from ``mark`` on: (method, path, status, bytes)."""

    def __init__(self, log: Callable[[], str]) -> None:
        self._log = log
        self.mark = len(log())

    def lines(self) -> list[tuple[str, str, int, int]]:
        return [(m[1], m[2], int(m[3]), int(m[4])) for m in SERVED_LINE.finditer(self._log()[self.mark:])]

    def settled(self) -> list[tuple[str, str, int, int]]:
        """The lines once the log stops growing (a request's line is written when its
        body has been sent, just after the client has it)."""
        seen: list[int] = [-1]

        def still() -> bool:
            count = len(self.lines())
            done = count == seen[0]
            seen[0] = count
            return done

        eventually(still, 5, interval=0.3)
        return self.lines()

    @staticmethod
    def total(lines: list[tuple[str, str, int, int]]) -> int:
        return sum(size for _, _, _, size in lines)

    @staticmethod
    def gets(lines: list[tuple[str, str, int, int]], filename: str) -> list[tuple[str, str, int, int]]:
        return [line for line in lines if line[0] == "GET" and line[1].rsplit("/", 1)[-1] == filename]


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Bytes-to-resolve per client, stock vs ours; printed and written to JSON at the end."""
    found: dict[str, Any] = {}
    yield found
    path = tmp_path_factory.mktemp("figures") / "bytes-to-resolve.json"
    path.write_text(json.dumps(found, indent=2))
    print(f"\nbytes-to-resolve: {json.dumps(found)}\nwritten to {path}")


def report(figures: dict[str, Any], client: str, command: str, stock: list, ours: list) -> None:
    entry = {"command": command, "stock_bytes": Served.total(stock), "ours_bytes": Served.total(ours),
             "stock_requests": [f"{m} {p} {s} {b}" for m, p, s, b in stock],
             "ours_requests": [f"{m} {p} {s} {b}" for m, p, s, b in ours]}
    figures[client] = entry
    print(f"\n[{client}] bytes-to-resolve a (a -> b -> c, c {PADDING} B wheel): stock pypiserver "
          f"{entry['stock_bytes']:,} B in {len(stock)} requests, ours {entry['ours_bytes']:,} B in "
          f"{len(ours)} requests\n  command: {command}")


# -- servers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clients")


@pytest.fixture(scope="module")
def local_bucket(work: Path) -> BucketProbe:
    return LocalProbe(work / "bucket")


def index_env(bucket: BucketProbe, htpasswd: Path) -> dict[str, str]:
    return {**bucket.env(), "PASSWORD_FILE": str(htpasswd), "SYNC_INTERVAL": str(SYNC_INTERVAL),
            "FULL_SYNC_INTERVAL": str(FULL_SYNC_INTERVAL)}


@pytest.fixture(scope="module")
def index(local_bucket: BucketProbe, work: Path) -> Iterator[Instance]:
    """Our index (gunicorn, two workers) on a local bucket, shared by tests 1-7."""
    htpasswd = write_htpasswd(work / "htpasswd")
    instance = start_instance(index_env(local_bucket, htpasswd), work / "index", work)
    yield instance
    instance.stop()


class StockServer:
    """Stock pypiserver over a folder, under gunicorn with an access log shaped like our
    request log (``GET /path 200 123 B``), as bench/servers.py's ``stock_app``."""

    def __init__(self, folder: Path, log_path: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.log_path = folder, log_path
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        app = (f"pypiserver:app(roots=[{str(folder)!r}], backend_arg=\"simple-dir\", "
               "disable_fallback=True, password_file=\".\", authenticate=[])")
        with open(log_path, "wb") as log_file:
            # Run in the folder's parent: no gunicorn.conf.py there, stock settings.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", app, "-b", f"127.0.0.1:{port}", "-w", "2",
                 "--no-sendfile", "--access-logfile", "-", "--access-logformat", "%(m)s %(U)s %(s)s %(B)s B"],
                cwd=folder.parent, env=clean_env({}), stdout=log_file, stderr=subprocess.STDOUT,
            )

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"stock pypiserver exited:\n{self.log()}")
            try:
                import urllib.request

                with urllib.request.urlopen(self.url + "/simple/", timeout=5) as reply:
                    return reply.status == 200
            except OSError:
                return False

        assert eventually(up, 30), self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def stock(work: Path) -> Iterator[StockServer]:
    server = StockServer(work / "stock-files", work / "stock.log")
    yield server
    server.stop()


# -- packages ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chain_wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """a 1.0 -> b 1.0 -> c 1.0; c's wheel carries 40 MB of random (incompressible) bytes."""
    folder = tmp_path_factory.mktemp("chain")
    return {
        "a": make_wheel(folder, "a", "1.0", requires=("b",)),
        "b": make_wheel(folder, "b", "1.0", requires=("c",)),
        "c": make_wheel(folder, "c", "1.0", padding=PADDING),
    }


@pytest.fixture(scope="module")
def chain(index: Instance, stock: StockServer, chain_wheels: dict[str, Path]) -> dict[str, Path]:
    """The chain uploaded to our index with twine, and copied into stock's folder."""
    uploaded = twine_upload(index.url, *chain_wheels.values())
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    for wheel in chain_wheels.values():
        shutil.copy(wheel, stock.folder / wheel.name)
    assert c_listed(index)
    return chain_wheels


def c_listed(instance: Instance) -> bool:
    return eventually(lambda: instance.get("/simple/c/")[0] == 200, SYNC_BOUND)


def json_page(instance: Instance, project: str) -> Optional[dict[str, Any]]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{instance.url}/simple/{project}/", headers={"Accept": JSON_V1})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError:
        return None


def file_of(page: Optional[dict[str, Any]], filename: str) -> Optional[dict[str, Any]]:
    for file in (page or {}).get("files", []):
        if file["filename"] == filename:
            return file
    return None


def wheel_metadata(wheel: Path) -> bytes:
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return zf.read(name)


@pytest.fixture(scope="module")
def modern_pip(work: Path) -> Path:
    """A venv whose pip is the registry's newest (a venv's bundled pip may predate PEP 714's
    data-core-metadata): the pip the tests run, on other venvs with ``--python``."""
    folder = work / "pip-venv"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    upgraded = subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip>=24"],
                              capture_output=True, text=True, timeout=600)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    return python


def pip(modern_pip: Path, python: Path, *args: str) -> subprocess.CompletedProcess:
    """The recent pip (--dry-run, --report, PEP 658/714) acting on ``python``'s environment,
    no config file, no cache."""
    return run([str(modern_pip), "-m", "pip", "--python", str(python), *args], env={"PIP_NO_CACHE_DIR": "1"})


def uv(*args: str, cache: Path, cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uv", *args, "--cache-dir", str(cache)], cwd=cwd,
                          env=clean_env({}), capture_output=True, text=True, timeout=300)


def instant(text: str) -> datetime.datetime:
    """An RFC 3339 UTC time with any number of fractional digits (uv writes "...:50.8Z")."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", text)
    assert match, text
    moment = datetime.datetime.fromisoformat(match[1]).replace(tzinfo=datetime.timezone.utc)
    return moment + datetime.timedelta(microseconds=int((match[2] or "0")[:6].ljust(6, "0")))


def installed_version(python: Path, module: str) -> str:
    probe = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({module!r}))"],
                           capture_output=True, text=True, timeout=60)
    return probe.stdout.strip() or probe.stderr


# -- 1. pip ----------------------------------------------------------------------------


def test_pip_resolves_from_metadata_files_not_the_wheel(
    modern_pip: Path, index: Instance, stock: StockServer, chain: dict[str, Path], tmp_path: Path, figures: dict[str, Any]
) -> None:
    """pip (>= 22.2) reads ``c-1.0-py3-none-any.whl.metadata`` (PEP 658/714, announced by
    data-core-metadata) and never GETs c's 40 MB wheel; against stock pypiserver, which has
    no metadata files, it downloads the whole wheel to read its METADATA."""
    python = new_venv(tmp_path / "venv")
    c_wheel = chain["c"].name

    def resolve(url: str, served: Served, name: str) -> list[tuple[str, str, int, int]]:
        result = pip(modern_pip, python, "install", "--dry-run", "--report", str(tmp_path / f"{name}.json"),
                     "--index-url", url + "/simple/", "a")
        assert result.returncode == 0, result.stdout + result.stderr
        resolved = json.loads((tmp_path / f"{name}.json").read_text())["install"]
        assert {item["metadata"]["name"] for item in resolved} == {"a", "b", "c"}
        return served.settled()

    stock_served = resolve(stock.url, Served(stock.log), "stock")
    ours = resolve(index.url, Served(index.log), "ours")
    assert sum(b for *_, b in Served.gets(stock_served, c_wheel)) >= PADDING  # the "before": the whole wheel
    assert Served.gets(ours, c_wheel) == []
    assert [line[2] for line in Served.gets(ours, c_wheel + ".metadata")] == [200]
    assert Served.total(ours) < 1024 * 1024
    version = run([str(modern_pip), "-m", "pip", "--version"]).stdout.split()[1]
    report(figures, "pip", f"pip {version}: pip install --dry-run --report R --index-url URL/simple/ a",
           stock_served, ours)


# -- 2. pdm ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pdm(work: Path) -> Path:
    """pdm in a venv of its own, installed from the registry (the machine's pip config).
    ``pdm[locked]``: pdm pins the versions of its dependencies it was released with there;
    plain ``pdm`` 2.29 takes hishel 2.0, which it cannot import (no SyncSqliteStorage)."""
    python = new_venv(work / "pdm-venv")
    result = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "pdm[locked]"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return python


def pdm_lock(pdm: Path, project: Path, url: str, cache: Path) -> subprocess.CompletedProcess:
    project.mkdir(parents=True)
    # A source named "pypi" replaces PyPI: the index is the only source.
    (project / "pyproject.toml").write_text(
        '[project]\nname = "probe"\nversion = "0"\nrequires-python = ">=3.8"\ndependencies = ["a"]\n\n'
        f'[[tool.pdm.source]]\nname = "pypi"\nurl = "{url}/simple/"\n'
    )
    env = clean_env({"PDM_IGNORE_SAVED_PYTHON": "1", "PDM_CACHE_DIR": str(cache), "PDM_CHECK_UPDATE": "false",
                     "PDM_HOME": str(cache / "home"), "PDM_PYTHON": sys.executable,
                     "PDM_CONFIG_FILE": str(cache / "config.toml")})
    return subprocess.run([str(pdm), "-m", "pdm", "lock", "-v"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)


def test_pdm_locks_from_metadata_files_not_the_wheel(
    index: Instance, stock: StockServer, chain: dict[str, Path], pdm: Path, tmp_path: Path,
    figures: dict[str, Any]
) -> None:
    """``pdm lock`` with the index as its only source reads c's ``.metadata`` and never
    GETs c's wheel; on stock it downloads the wheel. pdm reads each project page twice (the
    resolution, then again to collect the files and hashes for the lock), on both servers."""
    c_wheel = chain["c"].name
    results = {}
    for name, url, log in (("stock", stock.url, stock.log), ("ours", index.url, index.log)):
        served = Served(log)
        locked = pdm_lock(pdm, tmp_path / name, url, tmp_path / f"cache-{name}")
        assert locked.returncode == 0, locked.stdout + locked.stderr
        lock = (tmp_path / name / "pdm.lock").read_text()
        assert all(f'name = "{p}"' in lock for p in "abc"), lock
        results[name] = served.settled()
    assert sum(b for *_, b in Served.gets(results["stock"], c_wheel)) >= PADDING
    assert Served.gets(results["ours"], c_wheel) == []
    assert Served.gets(results["ours"], c_wheel + ".metadata")
    version = subprocess.run([str(pdm), "-m", "pdm", "--version"], capture_output=True, text=True).stdout.split()[-1]
    report(figures, "pdm", f"pdm {version}: pdm lock (pyproject: dependencies = [\"a\"], [[tool.pdm.source]] name=\"pypi\" url=URL)",
           results["stock"], results["ours"])


# -- 3. uv -----------------------------------------------------------------------------


def test_uv_resolves_from_metadata_files(
    index: Instance, stock: StockServer, chain: dict[str, Path], tmp_path: Path, figures: dict[str, Any]
) -> None:
    """``uv pip compile`` asks for the JSON page, reads c's ``.metadata``, never c's wheel.
    On stock (no metadata), uv reads the wheel's METADATA with range requests (the zip's
    central directory, then the one member) rather than the whole wheel."""
    c_wheel = chain["c"].name
    (tmp_path / "requirements.in").write_text("a\n")
    results = {}
    for name, url, log in (("stock", stock.url, stock.log), ("ours", index.url, index.log)):
        served = Served(log)
        compiled = uv("pip", "compile", str(tmp_path / "requirements.in"), "--index-url", url + "/simple/",
                      "--python", sys.executable, "-o", str(tmp_path / f"{name}.txt"), cache=tmp_path / f"cache-{name}")
        assert compiled.returncode == 0, compiled.stdout + compiled.stderr
        assert re.search(r"^c==1\.0", (tmp_path / f"{name}.txt").read_text(), re.M)
        results[name] = served.settled()
    ours = results["ours"]
    assert Served.gets(ours, c_wheel) == [] and Served.gets(ours, c_wheel + ".metadata")
    stock_c = Served.gets(results["stock"], c_wheel)
    print(f"\n[uv] on stock, c's wheel: {stock_c}")
    assert stock_c and sum(b for *_, b in stock_c) < PADDING  # ranges, not the whole file
    version = run([sys.executable, "-m", "uv", "--version"]).stdout.split()[1]
    report(figures, "uv", f"uv {version}: uv pip compile requirements.in --index-url URL/simple/", results["stock"], ours)


# -- 4. Requires-Python ----------------------------------------------------------------


def test_pip_skips_a_release_whose_requires_python_excludes_it(modern_pip: Path, index: Instance,
                                                               tmp_path: Path) -> None:
    """d 2.0 says Requires-Python >=4: pip installs d 1.0 and never asks for 2.0's wheel
    (nor its metadata): data-requires-python on the page is enough."""
    old = make_wheel(tmp_path / "dist", "d", "1.0", requires_python=">=3.8")
    new = make_wheel(tmp_path / "dist", "d", "2.0", requires_python=">=4")
    assert twine_upload(index.url, old, new).returncode == 0
    python = new_venv(tmp_path / "venv")
    served = Served(index.log)
    installed = pip(modern_pip, python, "install", "--index-url", index.url + "/simple/", "d")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert installed_version(python, "d") == "1.0"
    lines = served.settled()
    assert Served.gets(lines, new.name) == [] and Served.gets(lines, new.name + ".metadata") == []
    assert [line[2] for line in Served.gets(lines, old.name)] == [200]


# -- 5. uv --exclude-newer -------------------------------------------------------------


def test_uv_exclude_newer_uses_the_upload_times(index: Instance, tmp_path: Path) -> None:
    """Upload times come from the index (PEP 700 ``upload-time``): ``uv lock --exclude-newer T``
    with T between two uploads picks the older release, and uv.lock keeps the times."""
    first = make_wheel(tmp_path / "dist", "e", "1.0")
    second = make_wheel(tmp_path / "dist", "e", "2.0")
    assert twine_upload(index.url, first).returncode == 0
    time.sleep(2)
    cutoff = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    time.sleep(2)
    assert twine_upload(index.url, second).returncode == 0
    page = json_page(index, "e")
    times = {f["filename"]: f["upload-time"] for f in page["files"]}  # type: ignore[index]
    assert times[first.name] < cutoff < times[second.name], (times, cutoff)
    project = tmp_path / "project"
    project.mkdir()
    # UV_NO_CONFIG=1 also ignores [tool.uv] in pyproject.toml: the index is given on the
    # command line, as the default (the only) index.
    (project / "pyproject.toml").write_text(
        '[project]\nname = "probe"\nversion = "0"\nrequires-python = ">=3.8"\ndependencies = ["e"]\n'
    )
    index_url = index.url + "/simple/"
    locked = uv("lock", "--default-index", index_url, "--exclude-newer", cutoff, "--python", sys.executable,
                cache=tmp_path / "cache", cwd=project)
    assert locked.returncode == 0, locked.stdout + locked.stderr
    lock = (project / "uv.lock").read_text()
    print(f"\n[uv] uv.lock with --exclude-newer {cutoff}:\n{lock}")
    assert re.search(r'name = "e"\nversion = "1\.0"', lock), lock
    assert f'source = {{ registry = "{index_url}" }}' in lock
    assert 'version = "2.0"' not in lock
    # uv keeps the index's upload-time, to the millisecond (trailing zeros dropped: ".8Z").
    (kept,) = re.findall(r'upload-time = "([^"]+)"', lock)
    assert abs((instant(kept) - instant(times[first.name])).total_seconds()) < 0.001, (kept, times)
    # Without the cut-off, the same project locks 2.0: the times, nothing else, excluded it.
    (project / "uv.lock").unlink()
    unbounded = uv("lock", "--default-index", index_url, "--python", sys.executable, cache=tmp_path / "cache",
                   cwd=project)
    assert unbounded.returncode == 0, unbounded.stdout + unbounded.stderr
    assert re.search(r'name = "e"\nversion = "2\.0"', (project / "uv.lock").read_text())


# -- 6. yank ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yanked_f(index: Instance, local_bucket: BucketProbe, work: Path) -> dict[str, Path]:
    """f 1.0 and f 2.0 uploaded, then f 2.0 yanked with the command line (reason "broken"),
    seen on the index's page."""
    folder = work / "f-dist"
    wheels = {"1.0": make_wheel(folder, "f", "1.0", requires_python=">=3.8"),
              "2.0": make_wheel(folder, "f", "2.0", requires_python=">=3.8")}
    assert twine_upload(index.url, *wheels.values()).returncode == 0
    env = clean_env({**local_bucket.env(), "LOCAL_PACKAGE_DIRECTORY": str(work / "cli")})
    yanked = subprocess.run([sys.executable, "-m", "gcs_sync", "yank", "f", "2.0", "--reason", "broken"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert yanked.returncode == 0, yanked.stdout + yanked.stderr

    def shown() -> bool:
        status, body = index.get("/simple/f/")
        return status == 200 and 'data-yanked="broken"' in body.decode()

    assert eventually(shown, SYNC_BOUND), index.get("/simple/f/")
    return wheels


def test_pip_skips_a_yanked_release_unless_pinned(modern_pip: Path, index: Instance, yanked_f: dict[str, Path],
                                                  tmp_path: Path) -> None:
    url = index.url + "/simple/"
    python = new_venv(tmp_path / "venv")
    plain = pip(modern_pip, python, "install", "--index-url", url, "f")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert installed_version(python, "f") == "1.0"
    pinned = pip(modern_pip, python, "install", "--index-url", url, "f==2.0")
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert installed_version(python, "f") == "2.0"
    output = pinned.stdout + pinned.stderr
    print(f"\n[pip] f==2.0:\n{output}")
    assert re.search(r"WARNING: The candidate selected for download or install is a yanked version: "
                     r"'f' candidate \(version 2\.0 .*\)\s+Reason for being yanked: broken", output), output


def test_uv_skips_a_yanked_release_unless_pinned(index: Instance, yanked_f: dict[str, Path], tmp_path: Path) -> None:
    url = index.url + "/simple/"
    python = new_venv(tmp_path / "venv")
    cache = tmp_path / "cache"
    plain = uv("pip", "install", "--python", str(python), "--index-url", url, "f", cache=cache)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert installed_version(python, "f") == "1.0"
    pinned = uv("pip", "install", "--python", str(python), "--index-url", url, "f==2.0", cache=cache)
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert installed_version(python, "f") == "2.0"
    output = pinned.stdout + pinned.stderr
    print(f"\n[uv] f==2.0:\n{output}")
    assert 'warning: `f==2.0` is yanked (reason: "broken")' in output, output


# -- 7. pypi-simple --------------------------------------------------------------------


def test_pypi_simple_reads_every_field(index: Instance, yanked_f: dict[str, Path]) -> None:
    from pypi_simple import ACCEPT_HTML_ONLY, ACCEPT_JSON_ONLY, PyPISimple

    good, bad = yanked_f["1.0"], yanked_f["2.0"]
    with PyPISimple(endpoint=index.url + "/simple/") as client:
        pages = {accept: client.get_project_page("f", accept=accept) for accept in (ACCEPT_JSON_ONLY, ACCEPT_HTML_ONLY)}
        for accept, page in pages.items():
            packages = {p.filename: p for p in page.packages}
            assert set(packages) == {good.name, bad.name}
            for wheel in (good, bad):
                package = packages[wheel.name]
                metadata = client.get_package_metadata_bytes(package)
                assert metadata == wheel_metadata(wheel)
                assert package.has_metadata is True
                assert package.metadata_digests == {"sha256": hashlib.sha256(metadata).hexdigest()}
                assert package.digests["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
                assert package.requires_python == ">=3.8"
            assert (packages[good.name].is_yanked, packages[good.name].yanked_reason) == (False, None)
            assert (packages[bad.name].is_yanked, packages[bad.name].yanked_reason) == (True, "broken")
        json_packages = {p.filename: p for p in pages[ACCEPT_JSON_ONLY].packages}
        for wheel in (good, bad):
            package = json_packages[wheel.name]
            assert package.size == wheel.stat().st_size
            assert isinstance(package.upload_time, datetime.datetime) and package.upload_time.tzinfo is not None
            assert abs((datetime.datetime.now(datetime.timezone.utc) - package.upload_time).total_seconds()) < 600
        html_packages = {p.filename: p for p in pages[ACCEPT_HTML_ONLY].packages}
        # HTML (PEP 503/592/658/714) has no size or upload time: pypi-simple gives None.
        assert all(p.size is None and p.upload_time is None for p in html_packages.values())
        assert pages[ACCEPT_JSON_ONLY].repository_version == "1.1"


# -- 8. two instances, three backends --------------------------------------------------


@pytest.fixture
def instances(bucket: BucketProbe, tmp_path: Path, htpasswd: Path) -> Iterator[Callable[[str], Instance]]:
    started: list[Instance] = []

    def _start(name: str) -> Instance:
        instance = start_instance(index_env(bucket, htpasswd), tmp_path / name, tmp_path)
        started.append(instance)
        return instance

    yield _start
    for instance in started:
        instance.stop()


def test_an_upload_through_a_is_served_with_its_record_by_b_and_by_a_cold_c(
    instances: Callable[[str], Instance], bucket: BucketProbe, tmp_path: Path
) -> None:
    """Within SYNC_INTERVAL plus a check, B's JSON page has the fields of the record A made
    at upload (requires-python, core-metadata, upload-time, size), and B's ``.metadata`` has
    that digest. A new instance C, once ``/_ah/warmup`` answers 200 with status "ok" (the
    warm-up has synced and built the index), answers its very first ``/simple/<p>/`` request with them."""
    a, b = instances("a"), instances("b")
    wheel = make_wheel(tmp_path / "dist", "spread", "1.0", requires_python=">=3.9", requires=("b",))
    metadata_sha = hashlib.sha256(wheel_metadata(wheel)).hexdigest()
    assert json_page(b, "spread") is None  # B has a view without it
    uploaded = twine_upload(a.url, wheel)
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    on_a = file_of(json_page(a, "spread"), wheel.name)
    assert on_a is not None and "upload-time" in on_a

    def expected(file: Optional[dict[str, Any]]) -> bool:
        return (file is not None and file["requires-python"] == ">=3.9"
                and file["core-metadata"] == {"sha256": metadata_sha}
                and file["upload-time"] == on_a["upload-time"] and file["size"] == wheel.stat().st_size
                and file["yanked"] is False)

    started = time.monotonic()
    assert eventually(lambda: expected(file_of(json_page(b, "spread"), wheel.name)), SYNC_BOUND), \
        json_page(b, "spread")
    print(f"\n[{bucket.backend}] B served A's upload with its record after {time.monotonic() - started:.2f}s "
          f"(bound {SYNC_BOUND}s)")
    status, served_metadata = b.get(f"/packages/{wheel.name}.metadata")
    assert status == 200 and hashlib.sha256(served_metadata).hexdigest() == metadata_sha
    c = instances("c")
    status, body = c.get("/_ah/warmup")  # returns once the warm-up has synced: 200, "ok"
    assert status == 200 and json.loads(body)["status"] == "ok", body
    before = Served(c.log)
    before.mark = 0
    assert {path for _, path, _, _ in before.lines()} <= {"/health", "/_ah/warmup"}  # nothing else asked yet
    first = json_page(c, "spread")  # C's first page request
    assert expected(file_of(first, wheel.name)), first
    assert c.get(f"/packages/{wheel.name}.metadata") == (200, served_metadata)
