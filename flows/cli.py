"""The ``loupe`` command line. Heavy imports wait until a command needs them."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda")


def quiet_env() -> None:
    # Offline, no telemetry: nothing phones home from a studio workstation.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # a loaded machine can take more than Prefect's default 20 s to start its temporary server
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        return w, h
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1536x1024, got {text!r}") from None


def _run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that processes shoots."""
    p.add_argument("--preset", default="catalog", help="built-in preset name or a .toml file (default: catalog)")
    p.add_argument("--state", help="catalog/review database folder or SQLAlchemy URL, e.g. "
                                   "postgresql+psycopg://host/loupe (default: OUT/.state)")
    p.add_argument("--device", choices=DEVICES, default="auto", help="where the stages run (default: auto)")
    p.add_argument("--ray-address", help="Ray cluster address (default: RAY_ADDRESS or a local Ray)")


def cmd_synth(a: argparse.Namespace) -> int:
    from models.simulator import synth_shoot

    paths = synth_shoot(a.out, a.images, a.seed, size=a.size, formats=tuple(a.formats.split(",")),
                        sensor_dust=a.sensor_dust, world=a.world)
    print(f"wrote {len(paths)} images and ground truth to {a.out}")
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from infra.storage import Location

    missing = [str(d) for d in a.shoots if not Location.of(d).is_dir()]
    if missing:
        print(f"error: not a shoot folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    if a.dry_run:
        from flows.shoot import dry_run

        for line in dry_run(a.shoots, a.out, preset=a.preset, state=a.state):
            print(line)
        return 0
    return _run(a.shoots, a.out, a, progress=not a.no_progress)


def cmd_demo(a: argparse.Namespace) -> int:
    from models.simulator import synth_shoot

    shoot = a.out / "shoots" / "demo-shoot"
    if not shoot.exists():
        print(f"rendering a simulated shoot of {a.images} images into {shoot} ...")
        synth_shoot(shoot, a.images, seed=7, size=(1536, 1024))
    return _run([shoot], a.out / "out", a, progress=True)


def _run(shoots: list[Path], out: Path, a: argparse.Namespace, *, progress: bool) -> int:
    """Check what can be checked in seconds, run the flow, and print the operator's summary."""
    import time

    from flows.preflight import preflight

    problems = preflight(out, a.preset, a.device, a.ray_address)
    if problems:
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    server = _boot_prefect()
    from flows.shoot import retouchers_ahead, run_shoots   # torch, the stages, the catalog: while Prefect's server boots
    from infra.catalog import Catalog
    from infra.layout import default_state

    with retouchers_ahead(shoots, a.ray_address, a.device):   # and Ray and the actors, side by side with it
        with server.serving() if server is not None else contextlib.nullcontext():
            with Catalog.open(a.state or default_state(out)).lock():   # refused here, in one line, if another run has it
                counts = run_shoots(shoots, out, preset=a.preset, state=a.state, device=a.device,
                                    ray_address=a.ray_address, progress=progress)
    print(summary(counts, time.monotonic() - t0, out, a.state))
    return 1 if counts.get("config_errors") else 0


def _boot_prefect() -> _PrefectServer | None:
    """Start Prefect's temporary server now (when no PREFECT_API_URL is set), so that it boots while the
    rest is imported and Ray starts (the flow would start it only when it runs; started after the
    imports, the first image started 0.6-0.8 s later on four 24 MP DNGs)."""
    from prefect.settings import PREFECT_API_URL

    return None if PREFECT_API_URL.value() else _PrefectServer()


class _PrefectServer:
    """Prefect's temporary API server, started as Prefect starts it (uvicorn serving Prefect's app in a
    process of its own, its UI off, marked ephemeral) but without importing Prefect's server package in
    this process, which Prefect's own way needs: that import alone took 2.4-3.0 s of a core here before
    Ray could start. Stopped at exit, as Prefect stops its own, and (on Linux) also when the command is
    killed outright, which Prefect's own is not (``_dies_with``)."""

    def __init__(self):
        import atexit

        self.process = self._start()
        atexit.register(self.stop)

    def _start(self):
        import importlib.util
        import socket
        import subprocess

        with socket.socket() as probe:      # a free port (Prefect picks one at random and checks it alike)
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        app_dir = Path(importlib.util.find_spec("prefect").submodule_search_locations[0]).parent
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        return subprocess.Popen([sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
                                 "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                                 "--log-level", "error", "--lifespan", "on"], env=env, preexec_fn=_dies_with(os.getpid()))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @contextlib.contextmanager
    def serving(self):
        """Wait until it answers, then point Prefect's client at it for the block."""
        import time

        import httpx
        from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

        from infra.errors import OperatorError

        limit = PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
        deadline = time.monotonic() + limit
        while True:
            code = self.process.poll()
            if code == 3:           # uvicorn's "address in use": the port was taken since it was probed
                self.process = self._start()
            elif code is not None:
                raise OperatorError(f"Prefect's temporary server exited with code {code} before it answered")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise OperatorError(f"Prefect's temporary server did not answer within {limit:.0f} s "
                                    "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")
            time.sleep(0.1)
        with temporary_settings(updates={PREFECT_API_URL: self.url}):
            yield

    def stop(self) -> None:
        import subprocess

        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _dies_with(parent: int):
    """A ``preexec_fn`` that has the child sent SIGTERM when ``parent`` dies, even by SIGKILL or the OOM
    killer, where no exit handler runs (Linux's ``PR_SET_PDEATHSIG``; elsewhere None: stopped at exit
    only). Everything it calls is looked up before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    prctl, getppid, leave = ctypes.CDLL(None, use_errno=True).prctl, os.getppid, os._exit

    def arm() -> None:
        prctl(1, int(signal.SIGTERM))      # PR_SET_PDEATHSIG
        if getppid() != parent:            # it died before the signal was armed
            leave(1)

    return arm


def summary(counts: dict[str, int], seconds: float, out: str | Path, state: str | None) -> str:
    from infra.layout import Layout

    done = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("exported", "review", "rejected", "retryable"))
    minutes, secs = divmod(int(round(seconds)), 60)
    lines = [f"done in {minutes}m{secs:02d}s: {done}, {counts.get('skipped', 0)} finished before",
             f"manifest: {Layout.of(out).manifest}", f"report:   {Layout.of(out).report}"]
    state_opt = f" --state {state}" if state else ""
    if counts.get("review"):
        lines.append(f"review:   {counts['review']} wait for a person: loupe review serve --out {out}{state_opt}")
    if counts.get("retryable"):
        lines.append(f"retry:    {counts['retryable']} hit a transient fault: run the same command again")
    if counts.get("config_errors"):
        lines.append(f"config:   {counts['config_errors']} problem(s) above; those shoots' files were rejected")
    return "\n".join(lines)


def cmd_report(a: argparse.Namespace) -> int:
    from infra.catalog import Catalog
    from infra.layout import default_state
    from infra.presets import load_preset
    from qa.report import REVIEW_URL, write_manifest, write_report

    catalog = Catalog.open(a.state or default_state(a.out))
    write_manifest(catalog, a.out)
    print(write_report(catalog, a.out, review_url=a.review_url or REVIEW_URL, rules=load_preset(a.preset).qa))
    return 0


def cmd_review(a: argparse.Namespace) -> int:
    from flows.review import ReviewError, approve, list_queue, parse_set, reject, rerun
    from infra.layout import default_state

    out = a.out
    state = a.state or default_state(out)
    if a.action == "serve":
        return _review_serve(a, state)
    if a.action == "list":
        for row in list_queue(state):
            print(f"{row['image_id']}  {row['shoot']}/{row['source']}  {row['reasons']}")
        return 0
    try:
        if a.action == "approve":
            approve(state, out, a.image_id, who=a.who, note=a.note or "")
        elif a.action == "reject":
            reject(state, out, a.image_id, note=a.note or "", who=a.who)
        else:
            status = rerun(state, out, a.image_id, {"stages": parse_set(a.set), "skip": a.skip}, who=a.who,
                           preset=a.preset, device=a.device)
            print(f"re-ran {a.image_id}: {status}")
            return 0
    except ReviewError as exc:
        print(f"error: {exc} (see `loupe review list --out {out}`)", file=sys.stderr)
        return 2
    print(f"{a.action}d {a.image_id}")
    return 0


def _review_serve(a: argparse.Namespace, state: Path) -> int:
    from infra.reviewapp.app import is_loopback, serve

    token = a.token or os.environ.get("LOUPE_REVIEW_TOKEN") or None
    if not is_loopback(a.host) and not token:
        print(f"error: refusing to listen on {a.host} without a login token: set LOUPE_REVIEW_TOKEN "
              "or pass --token (or keep the default --host 127.0.0.1)", file=sys.stderr)
        return 2
    print(f"review queue: http://{a.host}:{a.port}/queue" + ("  (login with the token)" if token else ""))
    serve(state, a.out, host=a.host, port=a.port, token=token, preset=a.preset, who=a.who, device=a.device)
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from flows.nightly import serve_nightly

    return serve_nightly(a.watch, a.out, cron=a.cron, timezone=a.timezone, preset=a.preset, device=a.device,
                         state=a.state, ray_address=a.ray_address, start_server=a.start_server)


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    p = argparse.ArgumentParser(prog="loupe", description="Retouch, check and export jewelry shoots.")
    p.add_argument("--version", action="version", version=f"loupe {version('loupe')}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="render a simulated shoot with ground truth (OUT/truth/)")
    s.add_argument("out", type=Path)
    s.add_argument("--images", type=int, default=8)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=_size, default=(1536, 1024), help="WIDTHxHEIGHT (default 1536x1024)")
    s.add_argument("--formats", default="dng,jpg,tif", help="comma list of dng,jpg,tif (default: all, cycled)")
    s.add_argument("--sensor-dust", type=int, default=0, metavar="N",
                   help="N sensor-dust spots at the same place in every image (default: 0)")
    s.add_argument("--world", choices=("default", "wide"), default="default",
                   help="studio world: default, or wide (papers, light box, acrylic riser, hard shadows, "
                        "white on white, pendants, camera noise/JPEG)")
    s.set_defaults(func=cmd_synth)

    r = sub.add_parser("run", help="process shoot folders into OUT")
    r.add_argument("shoots", nargs="+", metavar="SHOOT_DIR", help="a folder, file:// or s3://bucket/prefix")
    r.add_argument("--out", required=True, help="a folder, file:// or s3://bucket/prefix")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--dry-run", action="store_true", help="list what would be processed, skipped or refused, and why")
    _run_options(r)
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="simulate a shoot, run it, print where the report is")
    d.add_argument("--out", type=Path, default=Path("demo"))
    d.add_argument("--images", type=int, default=12)
    _run_options(d)
    d.set_defaults(func=cmd_demo)

    rep = sub.add_parser("report", help="rewrite manifest.csv and report.html for OUT")
    rep.add_argument("out")
    rep.add_argument("--state")
    rep.add_argument("--preset", default="catalog", help="whose QA thresholds the plots mark")
    rep.add_argument("--review-url", help="where the review app runs, for links (default: $LOUPE_REVIEW_URL or "
                                          "http://127.0.0.1:8765)")
    rep.set_defaults(func=cmd_report)

    rv = sub.add_parser("review", help="work the review queue from the shell, or serve it to a browser")
    rv.add_argument("action", choices=("list", "approve", "reject", "rerun", "serve"))
    rv.add_argument("image_id", nargs="?")
    rv.add_argument("--out", required=True)
    rv.add_argument("--state")
    rv.add_argument("--note")
    rv.add_argument("--who", default=os.environ.get("USER", "reviewer"))
    rv.add_argument("--set", action="append", default=[], metavar="STAGE.PARAM=VALUE",
                    help="rerun: a stage parameter override, e.g. dust.strength=0.3 or cutout.band=4 (repeatable)")
    rv.add_argument("--skip", action="append", default=[], metavar="STAGE", help="rerun: leave a stage out (repeatable)")
    rv.add_argument("--preset", help="rerun/serve: preset file when the images' preset is not a built-in")
    rv.add_argument("--device", choices=DEVICES, default="auto")
    rv.add_argument("--host", default="127.0.0.1", help="serve: address to bind (default 127.0.0.1)")
    rv.add_argument("--port", type=int, default=8765, help="serve: port (default 8765)")
    rv.add_argument("--token", help="serve: login token (default: LOUPE_REVIEW_TOKEN); required off loopback")
    rv.set_defaults(func=cmd_review)

    sv = sub.add_parser("serve", help="run every night on new shoot folders under ROOT (needs a Prefect server)")
    sv.add_argument("--watch", required=True, metavar="ROOT", help="a folder or s3://bucket/prefix of shoot folders")
    sv.add_argument("--out", required=True)
    sv.add_argument("--cron", default="0 2 * * *", help="when to run, a cron expression (default: 0 2 * * *)")
    sv.add_argument("--timezone", metavar="ZONE",
                    help="IANA zone the cron is read in, e.g. Europe/Paris (default: this machine's zone, else UTC)")
    sv.add_argument("--start-server", type=int, nargs="?", const=0, metavar="PORT",
                    help="start `prefect server start` as a child on PORT (default: a free one) instead of "
                         "using PREFECT_API_URL; stopped when serve exits")
    _run_options(sv)
    sv.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "review" and args.action not in ("list", "serve") and not args.image_id:
        print(f"error: review {args.action} needs an IMAGE_ID (see `loupe review list`)", file=sys.stderr)
        return 2
    quiet_env()
    from infra.errors import OperatorError

    try:
        return args.func(args)
    except OperatorError as exc:    # a setting or the machine, not a bug: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:          # disk full, read-only or unwritable folder mid-run
        where = f" {exc.filename}" if exc.filename else ""
        print(f"error:{where}: {exc.strerror or exc}; free space or fix permissions, then run again "
              "(finished images are kept)", file=sys.stderr)
        return 1


def entry() -> None:
    """The ``loupe`` command: ``main`` in a process that ends with it (``main`` itself also runs inside
    other processes, the tests', which keep their Ray and their garbage collector).

    Two things cost seconds after the summary line and do nothing for a process that is ending: Ray's
    exit hook first sleeps 0.5 s for log lines a run does not forward (shut down here, it does not), and
    the interpreter's last garbage collection walks every object Prefect, Great Expectations, pandas and
    torch made (1.9 s on 2 cores): frozen, it is skipped. Every exit hook still runs (Prefect's server
    stops, logs flush)."""
    import gc

    code = main()
    ray = sys.modules.get("ray")     # imported only by the commands that use it
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
