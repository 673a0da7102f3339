"""Check the deployment files against the service they deploy.

tests/sh/test_deploy.sh (part of `make test`) runs this, without Docker or
Kubernetes; `make test-docker` and `make test-swarm` (tests/docker/) run the
image, compose and the Swarm stack for real.  Checked here (Debian's python3 + PyYAML):

  docker/Dockerfile     the build stage runs only scripts/install-deps.sh and make
                        targets that `make test` builds; every COPY source exists
                        and is not excluded by .dockerignore; binaries come from the
                        Makefile's outputs; non-root USER; EXPOSE = the port; the
                        HEALTHCHECK script asks a real endpoint.
  .dockerignore         keeps build outputs, bench/node_modules, bench/out, .git out.
  deploy/docker-compose.yml, deploy/stack.yml, deploy/nginx.conf,
  deploy/nginx.Dockerfile, deploy/k8s/*.yaml
                        valid YAML; every MF_* name is a setting of the server and
                        the values pass the server's own validation (it is started
                        with them); ports, probe paths, model paths, body limit,
                        timeouts and grace periods agree with the settings; the
                        compose file, the stack and the Kubernetes manifests carry
                        the same MF_* settings and the same limits; the stack has
                        dnsrr, start-first updates with rollback, restart policy,
                        a read-only model mount and nginx.conf as a Swarm config.
  the model repository  what the replicas serve (MF_MODEL_REPOSITORY, or one
                        MF_MODEL file) lies inside a read-only mount; by default
                        the mount is this tree's models/ and the repository
                        models/repository, whose versions (symlinks included)
                        resolve inside the mount; the Kubernetes init container
                        lays out the same repository from the image's model; and
                        the server, started with the compose service's settings
                        on the tree's repository, serves every model in it.
  with --url URL        every probe path answers 200 on that running server, and
                        docker/healthcheck.sh exits 0 against it.

The setting names and defaults come from `mobileformer-server --print-config-json`;
values are validated by starting the server with them and a model path (or model
repository) that does not exist: exit status 2 means a setting was refused, 1
that only the model failed.

    /usr/bin/python3 tests/support/check_deploy_files.py --server BUILD/mobileformer-server [--url URL]
    /usr/bin/python3 tests/support/check_deploy_files.py --server S --print-compose-env
        (the compose service's MF_* environment, its paths in /models changed into
        the folder mounted there by default: what a replica sees, on this machine)
Prints one line per check ("ok", "FAIL", "SKIP"); exits 1 if any failed.
"""
import argparse
import fnmatch
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import yaml

# MF_DEPLOY_CHECK_REPO: check a copy of the files instead (to try the checks on broken ones)
REPO = os.path.abspath(os.environ.get("MF_DEPLOY_CHECK_REPO") or
                       os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEPLOY = os.path.join(REPO, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
BUNDLED_MODEL = "models/fashion_mnist_mobileformer.safetensors"
TREE_REPOSITORY = "models/repository"   # the repository the deployments serve by default
PROBES = {"/v2/health/live", "/v2/health/ready"}

failures = []


def check(cond, what, detail=""):
    if cond:
        print("ok    " + what)
    else:
        print("FAIL  %s%s" % (what, ": " + detail if detail else ""))
        failures.append(what)
    return cond


def skip(what, why):
    print("SKIP  %s: %s" % (what, why))


def rel(path):
    return os.path.relpath(path, REPO)


# ---- the server's settings ----------------------------------------------------

class Settings:
    def __init__(self, server):
        self.server = server
        out = subprocess.run([server, "--print-config-json"], check=True, capture_output=True,
                             text=True, timeout=30).stdout
        self.defaults = json.loads(out)
        self.env_names = {"MF_" + k.upper(): k for k in self.defaults}
        with open(os.path.join(REPO, "config", "server.json")) as f:
            self.file = json.load(f)

    def effective(self, env, with_file=True):
        """Defaults < config/server.json (the image's CMD) < env, as the server does."""
        cfg = dict(self.defaults)
        if with_file:
            cfg.update(self.file)
        for name, value in env.items():
            key = self.env_names.get(name)
            if key is None:
                continue
            d = self.defaults[key]
            if isinstance(d, bool):
                cfg[key] = str(value).lower() == "true"
            elif isinstance(d, int):
                cfg[key] = int(value)
            else:
                cfg[key] = str(value)
        return cfg

    def check_env(self, where, env, allowed_other=("OPENBLAS_NUM_THREADS",)):
        """Every name is a setting; the server accepts every value."""
        unknown = [n for n in env if n not in self.env_names and n not in allowed_other]
        check(not unknown, "%s: environment names are server settings" % where,
              "unknown: %s (the server ignores unknown MF_* names silently)" % ", ".join(unknown))
        mf = {n: str(v) for n, v in env.items() if n in self.env_names}
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
        clean.update(mf)
        # the model (or the repository) made to fail: what is left to refuse is a setting
        expect = "cannot load model"
        if mf.get("MF_MODEL_REPOSITORY"):
            clean["MF_MODEL_REPOSITORY"] = "/nonexistent/mf-deploy-check-repository"
            expect = "model_repository /nonexistent/mf-deploy-check-repository"
        r = subprocess.run([self.server, "--config", os.path.join(REPO, "config", "server.json"),
                            "--model", "/nonexistent/mf-deploy-check.safetensors"],
                           env=clean, capture_output=True, text=True, timeout=60)
        check(r.returncode == 1 and expect in r.stderr,
              "%s: the server accepts these %d settings" % (where, len(mf)),
              "exit %d: %s" % (r.returncode, r.stderr.strip()[-300:]))


# ---- small parsers ------------------------------------------------------------

def interpolate(value):
    """Compose's ${VAR:-default} / ${VAR-default} / ${VAR}, with the defaults
    (what a user gets who sets nothing); $$ is a literal $."""
    if not isinstance(value, str):
        return value

    def sub(m):
        name, _, default = m.group(1), m.group(2), m.group(3)
        return os.environ.get("MF_CHECK_" + name, default or "")
    value = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?-([^}]*))?\}", sub, value)
    return value.replace("$$", "$")


def size_bytes(text):
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", text)
    if not m:
        raise ValueError("size %r" % text)
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


def duration_ms(text):
    """nginx / compose durations: 500ms, 30s, 1m, 1m30s, 20 (seconds)."""
    text = str(text).strip()
    if re.fullmatch(r"\d+", text):
        return int(text) * 1000
    total, pos = 0, 0
    for m in re.finditer(r"(\d+)(ms|s|m|h)", text):
        if m.start() != pos:
            raise ValueError("duration %r" % text)
        total += int(m.group(1)) * {"ms": 1, "s": 1000, "m": 60000, "h": 3600000}[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError("duration %r" % text)
    return total


def cpus(text):
    text = str(text)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_bytes(text):
    m = re.fullmatch(r"(\d+)([KMGT]i?|[kmgt]b?|[KMGT])?", str(text))
    if not m:
        raise ValueError("memory %r" % text)
    unit = (m.group(2) or "").lower().rstrip("bi")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]


def dockerignore_patterns():
    path = os.path.join(REPO, ".dockerignore")
    if not os.path.exists(path):
        return None
    pats = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                pats.append(line.rstrip("/"))
    return pats


def ignored(path, pats):
    """Docker's rule, simplified: a pattern excludes a path or any folder above it
    (no "!" exceptions are used in this repository's .dockerignore)."""
    parts = path.split("/")
    for pat in pats:
        if pat.startswith("!"):
            raise ValueError(".dockerignore exceptions are not handled here")
        for i in range(1, len(parts) + 1):
            head = "/".join(parts[:i])
            if fnmatch.fnmatchcase(head, pat):
                return True
            if pat.startswith("**/") and fnmatch.fnmatchcase(parts[i - 1], pat[3:]):
                return True
    return False


# ---- what the replicas serve: the model repository ----------------------------

def served(cfg):
    """("repository", DIR) when model_repository is set (model is then not used),
    else ("model", FILE)."""
    if cfg.get("model_repository"):
        return "repository", os.path.normpath(cfg["model_repository"])
    return "model", os.path.normpath(cfg["model"])


def inside(path, folder):
    path, folder = os.path.normpath(path), os.path.normpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def check_bind_mount(where, cfg, volumes):
    """Compose and stack: what the replicas serve lies inside a read-only bind
    mount; by default that mount is this tree's models/, and what is served in
    it the tree's repository (or, with one model file, the bundled model).
    Returns (mount target, its source here) or None."""
    kind, path = served(cfg)
    what = "the model repository" if kind == "repository" else "the model"
    mounts = [v for v in volumes or [] if isinstance(v, dict) and v.get("target")]
    mm = sorted((v for v in mounts if inside(path, v["target"])),
                key=lambda v: len(os.path.normpath(v["target"])), reverse=True)   # the innermost holds it
    ok = bool(mm) and mm[0].get("read_only") is True and mm[0].get("type", "bind") == "bind" and (
        kind == "repository" or os.path.normpath(mm[0]["target"]) != path)
    check(ok, "%s: %s %s is inside a read-only bind mount" % (where, what, path),
          ", ".join("%s (%s)" % (v["target"], "read-only" if v.get("read_only") else "writable")
                    for v in mounts) or "no mounts")
    if not ok:
        return None
    m = mm[0]
    src = os.path.normpath(os.path.join(DEPLOY, interpolate(m.get("source", ""))))
    host = os.path.normpath(os.path.join(src, os.path.relpath(path, m["target"])))
    if kind == "repository":
        check(src == os.path.join(REPO, "models") and host == os.path.join(REPO, TREE_REPOSITORY),
              "%s: by default the mount is the tree's models/ and MF_MODEL_REPOSITORY its %s"
              % (where, TREE_REPOSITORY[len("models/"):]), "%s mounted at %s; %s" % (rel(src), m["target"], path))
    else:
        check(src == os.path.join(REPO, "models") and os.path.basename(path) == os.path.basename(BUNDLED_MODEL),
              "%s: by default that is the repository's models/ and MF_MODEL the bundled model" % where,
              "%s, %s" % (rel(src), path))
    return os.path.normpath(m["target"]), src


def to_host(value, mount):
    """A path inside the container's mount, as the same file on this machine."""
    target, src = mount
    if isinstance(value, str) and value.startswith("/") and inside(value, target):
        return os.path.normpath(os.path.join(src, os.path.relpath(value, target)))
    return value


def check_tree_repository():
    """models/repository: DIR/<name>/<version>/model.safetensors, each a file or
    a relative symlink that resolves inside models/ -- the folder the
    deployments mount, where an absolute link or one out of it would dangle.
    Returns {name: [versions]}."""
    root = os.path.join(REPO, TREE_REPOSITORY)
    mount = os.path.realpath(os.path.join(REPO, "models"))
    if not check(os.path.isdir(root), "%s is a folder" % TREE_REPOSITORY):
        return {}
    if not os.path.exists(os.path.join(REPO, BUNDLED_MODEL)):
        skip("%s" % TREE_REPOSITORY, "the bundled model its version 1 links to is not in the tree yet")
        return {}
    layout = {}
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(d):
            continue
        versions = sorted(int(v) for v in os.listdir(d)
                          if re.fullmatch(r"[1-9][0-9]{0,8}", v) and os.path.isdir(os.path.join(d, v)))
        files = [os.path.join(d, str(v), "model.safetensors") for v in versions]
        check(bool(versions) and all(os.path.isfile(f) for f in files),
              "%s/%s: versions %s, each with its model.safetensors" % (TREE_REPOSITORY, name, versions),
              "missing or dangling: %s" % ", ".join(rel(f) for f in files if not os.path.isfile(f)))
        # the version folders and the files: any of them may be a link
        links = [p for v in versions for p in (os.path.join(d, str(v)), os.path.join(d, str(v), "model.safetensors"))
                 if os.path.islink(p)]
        bad = [rel(f) for f in files if not inside(os.path.realpath(f), mount)]
        bad += ["%s -> %s (absolute)" % (rel(f), os.readlink(f)) for f in links if os.path.isabs(os.readlink(f))]
        check(not bad, "%s/%s: every version resolves inside models/, the mounted folder (%d relative symlinks)"
              % (TREE_REPOSITORY, name, len(links)), "; ".join(bad))
        layout[name] = versions
    check(bool(layout), "%s holds a model" % TREE_REPOSITORY)
    return layout


def check_repository_serves(server, image_env, env, mount, layout):
    """The server with the compose service's settings, the repository path taken
    to this tree's models/repository as the mount would, on a free loopback
    port: every model of the tree READY in its newest version (the default
    version policy, latest 1), listed so by its metadata, and answering a
    prediction; then SIGTERM, exit 0."""
    where = "the compose settings on the tree's %s" % TREE_REPOSITORY
    full = dict(image_env)
    full.update(env)
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("MF_")}
    run_env.update({k: str(to_host(v, mount)) for k, v in full.items()})
    run_env["OPENBLAS_NUM_THREADS"] = "1"
    cmd = [server, "--config", os.path.join(REPO, "config", "server.json"), "--port", "0", "--bind", "127.0.0.1",
           "--log_requests", "false"]
    p = subprocess.Popen(cmd, env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines, port = [], []

    def reader():
        for line in p.stderr:
            lines.append(line)
            m = re.search(r'"msg": *"listening".*"port": *(\d+)', line)
            if m:
                port.append(int(m.group(1)))
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    deadline = time.time() + 30
    while not port and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    try:
        if not check(bool(port), "%s: the server starts" % where, "".join(lines[-5:]).strip()[-600:]):
            return
        url = "http://127.0.0.1:%d" % port[0]

        def call(path, body=None, ctype="application/json"):
            req = urllib.request.Request(url + path, data=body, method="POST" if body is not None else "GET",
                                         headers={"Content-Type": ctype})
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode(errors="replace")
        listening = json.loads([ln for ln in lines if '"listening"' in ln][0])
        check(listening.get("model_repository") == to_host(env.get("MF_MODEL_REPOSITORY"), mount)
              and listening.get("model_control") == env.get("MF_MODEL_CONTROL", "none"),
              "%s: it serves the repository, model_control %s" % (where, env.get("MF_MODEL_CONTROL", "none")),
              json.dumps(listening))
        status, index = call("/v2/repository/index", b"{}")
        ready = sorted((e["name"], e["version"]) for e in index if e.get("state") == "READY") \
            if status == 200 and isinstance(index, list) else index
        want = sorted((n, str(v[-1])) for n, v in layout.items())
        check(ready == want, "%s: every model READY in its newest version: %s"
              % (where, ", ".join("%s %s" % nv for nv in want)), "index: %s %s" % (status, index))
        with open(os.path.join(REPO, "tests", "data", "images", "photo.jpg"), "rb") as f:
            photo = f.read()
        for name, versions in sorted(layout.items()):
            status, meta = call("/v2/models/" + name)
            check(status == 200 and meta.get("versions") == [str(versions[-1])],
                  "%s: GET /v2/models/%s lists version %d" % (where, name, versions[-1]), "%s %s" % (status, meta))
            status, pred = call("/v1/models/%s/predict" % name, photo, "image/jpeg")
            check(status == 200 and pred.get("model") == name and pred.get("predictions"),
                  "%s: POST /v1/models/%s/predict answers" % (where, name), "%s %s" % (status, str(pred)[:300]))
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        t.join(timeout=5)
    if port:
        check(rc == 0, "%s: SIGTERM, exit 0" % where, "exit %s" % rc)


# ---- Makefile ----------------------------------------------------------------

def makefile_facts():
    """(default goal, targets `make test` builds, {binary name: output path})."""
    rules, default = {}, None
    outputs = {}
    with open(os.path.join(REPO, "Makefile")) as f:
        text = f.read()
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_.\- ]+?)\s*:(?![=:])\s*(.*)$", line)
        if m and not line.startswith("\t"):
            for t in m.group(1).split():
                rules.setdefault(t, []).extend(m.group(2).split())
                if default is None and not t.startswith("."):
                    default = t
        m = re.match(r"^(\w+_BIN)\s*:=\s*\$\(BUILD\)/(\S+)$", line)
        if m:
            outputs[m.group(2)] = "build/" + m.group(2)
    tested = {default, "test-bins"} | {p for p in rules.get("test-bins", []) if not p.startswith("$")}
    check(re.search(r"^test:.*\n(\t.*\n)*\t.*\$\(MAKE\).*\btest-bins\b", text, re.M) is not None,
          "Makefile: `make test` builds test-bins", "no $(MAKE) ... test-bins under test:")
    return default, tested, outputs


# ---- Dockerfile ---------------------------------------------------------------

def dockerfile_instructions(path):
    with open(path) as f:
        lines = f.read().splitlines()
    out, cur = [], ""
    for line in lines:
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if cur and s.startswith("#"):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        cur += s
        word, _, rest = cur.partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


def check_dockerfile(settings, make_default, make_tested, make_outputs):
    path = os.path.join(REPO, "docker", "Dockerfile")
    ins = dockerfile_instructions(path)
    pats = dockerignore_patterns()
    check(pats is not None, ".dockerignore exists")
    pats = pats or []
    for must in ("build", ".git", "bench/node_modules", "bench/out"):
        check(ignored(must + "/x", pats), ".dockerignore keeps %s out of the context" % must)
    # mounted, not baked: versions added there must not grow every build context
    check(ignored(TREE_REPOSITORY + "/m/1/model.safetensors", pats),
          ".dockerignore keeps the model repository %s out of the context (it is mounted)" % TREE_REPOSITORY)

    stages, stage = [], None
    for word, rest in ins:
        if word == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            stage = {"image": m.group(1), "name": m.group(2), "workdir": "/", "run": [],
                     "copies": {}, "env": {}, "user": None, "expose": [], "health": None,
                     "entrypoint": None, "cmd": None, "run_workdirs": {}, "ordered": []}
            stages.append(stage)
        elif word == "WORKDIR":
            stage["workdir"] = os.path.join(stage["workdir"], rest)
        elif word == "RUN":
            stage["run"].append(rest)
            stage["run_workdirs"][rest] = stage["workdir"]
            stage["ordered"].append(("RUN", rest))
        elif word == "COPY":
            toks = shlex.split(rest)
            src_stage = None
            while toks and toks[0].startswith("--"):
                if toks[0].startswith("--from="):
                    src_stage = toks[0][7:]
                toks.pop(0)
            *srcs, dest = toks
            dest_abs = os.path.join(stage["workdir"], dest)
            for s in srcs:
                target = dest_abs
                if dest.endswith("/") or len(srcs) > 1:
                    target = os.path.join(dest_abs, os.path.basename(s.rstrip("/")))
                stage["copies"][os.path.normpath(target)] = (src_stage, s)
                stage["ordered"].append(("COPY", (os.path.normpath(target), src_stage, s)))
        elif word == "ENV":
            for tok in shlex.split(rest):
                k, _, v = tok.partition("=")
                stage["env"][k] = v
        elif word == "USER":
            stage["user"] = rest
        elif word == "EXPOSE":
            stage["expose"] += [int(p.split("/")[0]) for p in rest.split()]
        elif word == "HEALTHCHECK":
            stage["health"] = rest
        elif word == "ENTRYPOINT":
            stage["entrypoint"] = json.loads(rest)
        elif word == "CMD":
            stage["cmd"] = json.loads(rest)

    check(len(stages) == 2 and all(s["image"] == "debian:bookworm-slim" for s in stages),
          "Dockerfile: two stages on debian:bookworm-slim",
          ", ".join(s["image"] for s in stages))
    if len(stages) != 2:
        return None
    build, runtime = stages
    by_name = {s["name"]: s for s in stages if s["name"]}

    def script_source(st, arg):
        target = os.path.normpath(os.path.join(st["workdir"], arg))
        src = st["copies"].get(target)
        return src[1] if src and src[0] is None else None

    def classify(st, cmd):
        toks = shlex.split(cmd)
        if len(toks) == 3 and toks[0] == "sh" and script_source(st, toks[1]) == "scripts/install-deps.sh":
            return "install-deps " + toks[2]
        if toks and toks[0] == "make":
            targets = [t for t in toks[1:] if not t.startswith("-")]
            if any("=" in t for t in targets):
                return "make with variables " + " ".join(targets)
            return "make " + " ".join(targets or [make_default])
        return "other " + cmd

    # build stage: the install script's build profile, then make targets the tests build
    steps = [classify(build, c.strip()) for r in build["run"] for c in r.split("&&")]
    check(steps and steps[0] == "install-deps build" and all(
        s == "install-deps build" or (s.startswith("make ") and set(s.split()[1:]) <= make_tested)
        for s in steps),
        "Dockerfile build stage: only scripts/install-deps.sh build and make %s" % "/".join(sorted(make_tested)),
        "; ".join(steps))
    check(any(s.startswith("make ") for s in steps), "Dockerfile build stage runs make")

    # runtime stage: the install script's runtime profile and housekeeping only
    housekeeping = re.compile(r"^(rm -rf /var/lib/apt/lists/\*( \S+)*|groupadd .*|useradd .*)$")
    rsteps = [c.strip() for r in runtime["run"] for c in r.split("&&")]
    kinds = [classify(runtime, c) for c in rsteps]
    check("install-deps runtime" in kinds and all(
        k == "install-deps runtime" or housekeeping.match(c) for k, c in zip(kinds, rsteps)),
        "Dockerfile runtime stage: scripts/install-deps.sh runtime (+ apt lists cleanup, user)",
        "; ".join(rsteps))

    # COPY sources: in the repository and in the context, or outputs of the build stage
    for st in stages:
        for dest, (src_stage, src) in sorted(st["copies"].items()):
            if src_stage:
                other = by_name.get(src_stage)
                relsrc = os.path.relpath(src, other["workdir"]) if other else src
                check(other is build and relsrc in make_outputs.values(),
                      "Dockerfile COPY --from=%s %s is a Makefile output" % (src_stage, src),
                      "outputs: %s" % ", ".join(sorted(make_outputs.values())))
                continue
            matches = glob.glob(os.path.join(REPO, src))
            if not matches and src == BUNDLED_MODEL:
                skip("Dockerfile COPY %s exists" % src, "the bundled model is not in the tree yet")
            else:
                check(bool(matches), "Dockerfile COPY %s exists" % src)
            check(not ignored(src.rstrip("/"), pats), "Dockerfile COPY %s is not in .dockerignore" % src)

    user = runtime["user"] or "root"
    uid = user.split(":")[0]
    check(uid not in ("root", "0"), "Dockerfile runtime USER is not root", user)
    env = runtime["env"]
    settings.check_env("Dockerfile ENV", env)
    cfg = settings.effective(env)
    check(runtime["expose"] == [cfg["port"]], "Dockerfile EXPOSE = the service's port %d" % cfg["port"],
          str(runtime["expose"]))
    check(cfg["bind"] in ("0.0.0.0", "::"), "Dockerfile: the service listens on all addresses", cfg["bind"])

    copied = {d: s for d, (_, s) in runtime["copies"].items()}
    ep = runtime["entrypoint"] or []
    check(bool(ep) and copied.get(ep[0]) in (None, "/src/build/mobileformer-server")
          and ep[0] in copied, "Dockerfile ENTRYPOINT is the copied mobileformer-server", str(ep))
    cmd = runtime["cmd"] or []
    if "--config" in cmd:
        conf = cmd[cmd.index("--config") + 1]
        check(copied.get(os.path.dirname(conf)) == "config" or copied.get(conf) == "config/server.json",
              "Dockerfile CMD --config %s is the copied config/server.json" % conf)
    check(copied.get(cfg["model"]) == BUNDLED_MODEL,
          "Dockerfile: MF_MODEL %s is the copied bundled model" % cfg["model"])

    health = runtime["health"] or ""
    m = re.search(r"CMD\s+(\[.*\])", health)
    hc = json.loads(m.group(1)) if m else []
    hsrc = copied.get(hc[0]) if hc else None
    check(hsrc == "docker/healthcheck.sh", "Dockerfile HEALTHCHECK runs the copied docker/healthcheck.sh",
          health)
    return {"uid": int(uid) if uid.isdigit() else None, "port": cfg["port"], "env": env,
            "copies": copied, "health_cmd": hc, "workdir": runtime["workdir"], "build": build,
            "runtime_from": [v for v in runtime["copies"].values() if v[0]], "ignore": pats}


def run_build_stage(image, root):
    """Run the build stage here, with root as its filesystem: COPY copies from the
    repository (less .dockerignore), RUN runs as the Dockerfile has it (the
    install step finds its packages installed, or installs them, as `make test`
    does).  Then the runtime stage's COPY --from sources must be there."""
    build, pats = image["build"], image["ignore"]

    def in_root(p):
        return os.path.join(root, p.lstrip("/"))
    for kind, what in build["ordered"]:
        if kind == "COPY":
            target, _, src = what
            srcpath = os.path.join(REPO, src)
            if os.path.isdir(srcpath):
                for d, dirs, files in os.walk(srcpath):
                    dirs[:] = [x for x in dirs if not ignored(rel(os.path.join(d, x)), pats)]
                    for f in files:
                        path = os.path.join(d, f)
                        if not ignored(rel(path), pats):
                            t = in_root(os.path.join(target, os.path.relpath(path, srcpath)))
                            os.makedirs(os.path.dirname(t), exist_ok=True)
                            shutil.copy2(path, t)
            else:
                os.makedirs(os.path.dirname(in_root(target)), exist_ok=True)
                shutil.copy2(srcpath, in_root(target))
        else:
            cwd = in_root(build["run_workdirs"][what])
            os.makedirs(cwd, exist_ok=True)
            # as in a docker build: nothing of the make running these tests
            # (`make test SANITIZE=...` hands its variables down in MAKEFLAGS)
            env = {k: v for k, v in os.environ.items()
                   if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "SANITIZE", "BUILD")}
            r = subprocess.run(["sh", "-c", what], cwd=cwd, capture_output=True, text=True, timeout=900,
                               env=env)
            if not check(r.returncode == 0, "Dockerfile build stage, run here: RUN %s" % what,
                         (r.stdout + r.stderr).strip()[-800:]):
                return
    for src_stage, src in image["runtime_from"]:
        check(os.path.isfile(in_root(src)) and os.access(in_root(src), os.X_OK),
              "Dockerfile build stage, run here: it made %s" % src)


def healthcheck_paths():
    with open(os.path.join(REPO, "docker", "healthcheck.sh")) as f:
        text = f.read()
    m = re.search(r"^path=\$\{HEALTHCHECK_PATH:-(/\S+)\}$", text, re.M)
    paths = {m.group(1)} if m and re.search(r"GET %s HTTP", text) else set()
    check(paths == {"/v2/health/ready"}, "docker/healthcheck.sh asks GET /v2/health/ready (unless HEALTHCHECK_PATH)",
          str(paths))
    return paths


# ---- nginx.conf ---------------------------------------------------------------

def nginx_directives():
    with open(os.path.join(DEPLOY, "nginx.conf")) as f:
        text = "\n".join(line.split("#", 1)[0] for line in f.read().splitlines())

    def all_of(name, body=text):
        return [v.strip() for v in re.findall(r"(?:^|[\s;{])%s\s+([^;]*);" % re.escape(name), body)]
    return text, all_of


def check_nginx(cfg, service, port, nginx_port, where):
    """deploy/nginx.conf against the service it fronts (SERVICE:PORT, as named by
    compose or by the stack) and the port it is published on."""
    text, all_of = nginx_directives()
    passes = all_of("proxy_pass")
    m = re.fullmatch(r"http://(\$\w+)", passes[0]) if len(passes) == 1 else None
    check(m is not None, "nginx.conf: one proxy_pass, through a variable (re-resolved at run time)", str(passes))
    var = m.group(1) if m else "$?"
    sets = [v.split(None, 1) for v in all_of("set")]
    target = [v[1] for v in sets if len(v) == 2 and v[0] == var]
    check(target == ["%s:%d" % (service, port)],
          "nginx.conf: %s is %s:%d (the service in %s)" % (var, service, port, where), str(target))
    check(not re.search(r"\bupstream\s+\S+\s*\{", text),
          "nginx.conf: no upstream block (nginx 1.22 would resolve its servers once, at start)")
    res = all_of("resolver")
    toks = res[0].split() if len(res) == 1 else []
    valid = [t[6:] for t in toks if t.startswith("valid=")]
    check(toks[:1] == ["127.0.0.11"] and len(valid) == 1 and duration_ms(valid[0]) <= 5000,
          "nginx.conf: resolver 127.0.0.11 (Docker's DNS), answers kept at most 5 s", str(res))
    ct = all_of("proxy_connect_timeout")
    check(len(ct) == 1 and duration_ms(ct[0]) < 1000,
          "nginx.conf: proxy_connect_timeout under a second (a vanished replica is skipped fast)", str(ct))
    listens = all_of("listen")
    check(listens == [str(nginx_port)], "nginx.conf: listens on %d (nginx's port in %s)" % (nginx_port, where),
          str(listens))
    cmbs = all_of("client_max_body_size")
    check(len(cmbs) == 1 and size_bytes(cmbs[0]) == cfg["max_body_bytes"],
          "nginx.conf: client_max_body_size = max_body_bytes (%d)" % cfg["max_body_bytes"], str(cmbs))
    for d in ("proxy_read_timeout", "proxy_send_timeout"):
        v = all_of(d)
        check(len(v) == 1 and duration_ms(v[0]) > cfg["request_timeout_ms"],
              "nginx.conf: %s > request_timeout_ms (%d)" % (d, cfg["request_timeout_ms"]), str(v))
    nu = all_of("proxy_next_upstream")
    toks = nu[0].split() if len(nu) == 1 else []
    check("error" in toks and "timeout" in toks and set(toks) <= {"error", "timeout"},
          "nginx.conf: retries on the next replica on connection errors and connect timeouts only "
          "(no http_5xx, no non_idempotent)", str(nu))


def nginx_image():
    """What deploy/nginx.Dockerfile puts in the nginx image: its health check script and MF_PORT."""
    ins = dockerfile_instructions(os.path.join(DEPLOY, "nginx.Dockerfile"))
    copies, env = {}, {}
    for word, rest in ins:
        if word == "COPY":
            toks = shlex.split(rest)
            copies[toks[-1]] = toks[-2]
        elif word == "ENV":
            for tok in shlex.split(rest):
                k, _, v = tok.partition("=")
                env[k] = v
    check([r for w, r in ins if w == "FROM"] == ["debian:bookworm-slim"],
          "deploy/nginx.Dockerfile: on debian:bookworm-slim, like the service image")
    check(copies.get("/etc/nginx/nginx.conf") == "deploy/nginx.conf",
          "deploy/nginx.Dockerfile: deploy/nginx.conf is the default config")
    return copies, env


# ---- docker-compose.yml -------------------------------------------------------

def as_env(env):
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: interpolate(str(v)) for k, v in (env or {}).items()}


def check_compose(settings, image):
    path = os.path.join(DEPLOY, "docker-compose.yml")
    with open(path) as f:
        doc = yaml.safe_load(f)
    check(isinstance(doc, dict) and "services" in doc, "docker-compose.yml: valid YAML with services")
    services = doc.get("services", {})
    svc = services.get("mobileformer", {})
    ngx = services.get("nginx", {})
    check(bool(svc) and bool(ngx), "docker-compose.yml: services mobileformer and nginx")

    b = svc.get("build", {})
    ctx = os.path.normpath(os.path.join(DEPLOY, b.get("context", ".")))
    check(ctx == REPO and os.path.normpath(os.path.join(ctx, b.get("dockerfile", "Dockerfile")))
          == os.path.join(REPO, "docker", "Dockerfile"),
          "docker-compose.yml: builds docker/Dockerfile from the repository root")
    check("container_name" not in svc and all(":" not in str(p) for p in svc.get("ports", [])),
          "docker-compose.yml: mobileformer has no fixed name or host port (so --scale works)")

    env = as_env(svc.get("environment"))
    settings.check_env("docker-compose.yml mobileformer environment", env)
    full_env = dict(image["env"])
    full_env.update(env)
    cfg = settings.effective(full_env)
    port = cfg["port"]
    check([str(p) for p in svc.get("expose", [])] == [str(port)],
          "docker-compose.yml: mobileformer exposes its port %d" % port)

    res = svc.get("deploy", {}).get("resources", {})
    lim, rsv = res.get("limits", {}), res.get("reservations", {})
    check("cpus" in lim and "memory" in lim and "memory" in rsv,
          "docker-compose.yml: CPU and memory limits, memory reservation")
    ncpu = cpus(lim.get("cpus", 0))
    check(0 < cfg["workers"] * cfg["engine_threads"] <= max(1, round(ncpu)) and cfg["http_threads"] > 0,
          "docker-compose.yml: MF_WORKERS x MF_ENGINE_THREADS and MF_HTTP_THREADS set, within the %g CPUs"
          % ncpu, "workers %d engine_threads %d http_threads %d" % (
              cfg["workers"], cfg["engine_threads"], cfg["http_threads"]))
    check(svc.get("restart") in ("always", "unless-stopped", "on-failure"),
          "docker-compose.yml: mobileformer restart policy", str(svc.get("restart")))
    check(duration_ms(svc.get("stop_grace_period", "10s")) > cfg["drain_timeout_ms"],
          "docker-compose.yml: stop_grace_period > drain_timeout_ms (%d)" % cfg["drain_timeout_ms"])

    mount = check_bind_mount("docker-compose.yml", cfg, svc.get("volumes"))

    hc = svc.get("healthcheck", {}).get("test", [])
    check(hc[:1] == ["CMD"] and hc[1:] == image["health_cmd"],
          "docker-compose.yml: mobileformer health check = the image's HEALTHCHECK", str(hc))

    # nginx in front
    check("name" not in doc, "docker-compose.yml: no top-level name (docker-compose 1.29 refuses it; use -p)")
    nb = ngx.get("build", {})
    check(os.path.normpath(os.path.join(DEPLOY, nb.get("context", "."))) == REPO
          and os.path.normpath(os.path.join(REPO, nb.get("dockerfile", ""))) == os.path.join(DEPLOY, "nginx.Dockerfile"),
          "docker-compose.yml: nginx is built from deploy/nginx.Dockerfile")
    ports = [interpolate(str(p)) for p in ngx.get("ports", [])]
    parts = ports[0].split(":") if len(ports) == 1 else []
    check(len(parts) == 3 and parts[0] == "127.0.0.1",
          "docker-compose.yml: nginx publishes one port, by default on 127.0.0.1 only", str(ports))
    nginx_port = int(parts[-1]) if parts else 0
    nmounts = {v.get("target"): v for v in ngx.get("volumes", []) if isinstance(v, dict)}
    conf = nmounts.get("/etc/nginx/nginx.conf", {})
    check(os.path.normpath(os.path.join(DEPLOY, conf.get("source", ""))) == os.path.join(DEPLOY, "nginx.conf")
          and conf.get("read_only") is True,
          "docker-compose.yml: nginx reads deploy/nginx.conf, read-only")
    ncopies, nenv = nginx_image()
    nhc = ngx.get("healthcheck", {}).get("test", [])
    check(nhc[:1] == ["CMD"] and ncopies.get(nhc[1] if len(nhc) > 1 else "") == "docker/healthcheck.sh"
          and nenv.get("MF_PORT") == str(nginx_port),
          "docker-compose.yml: nginx health check = docker/healthcheck.sh (in its image) on nginx's port", str(nhc))
    check("mobileformer" in (ngx.get("depends_on") or {}), "docker-compose.yml: nginx depends on mobileformer")
    check(ngx.get("restart") in ("always", "unless-stopped", "on-failure"),
          "docker-compose.yml: nginx restart policy")
    check_nginx(cfg, "mobileformer", port, nginx_port, "docker-compose.yml")
    check_behind_proxy(cfg, "docker-compose.yml")
    return {"env": env, "limits": lim, "mount": mount, "image_env": image["env"], "cfg": cfg}


def check_behind_proxy(cfg, where):
    """Behind nginx (or an ingress) every connection comes from the proxy's
    address: a limit per client address would limit all clients together."""
    check(cfg["max_connections_per_client"] == 0,
          "%s: MF_MAX_CONNECTIONS_PER_CLIENT 0 (behind a proxy every client has the proxy's address)" % where,
          str(cfg["max_connections_per_client"]))


# ---- stack.yml (Docker Swarm) -------------------------------------------------

def check_stack(settings, image):
    path = os.path.join(DEPLOY, "stack.yml")
    with open(path) as f:
        doc = yaml.safe_load(f)
    check(isinstance(doc, dict) and str(doc.get("version")) == "3.8",
          "stack.yml: valid YAML, compose file format 3.8 (docker stack deploy)")
    services = doc.get("services", {})
    svc, ngx = services.get("mobileformer", {}), services.get("nginx", {})
    check(bool(svc) and bool(ngx), "stack.yml: services mobileformer and nginx")
    check("build" not in svc and "build" not in ngx, "stack.yml: images only (a swarm does not build)")
    env = as_env(svc.get("environment"))
    settings.check_env("stack.yml mobileformer environment", env)
    full_env = dict(image["env"])
    full_env.update(env)
    cfg = settings.effective(full_env)
    port = cfg["port"]
    d = svc.get("deploy", {})
    check(d.get("endpoint_mode") == "dnsrr",
          "stack.yml: endpoint_mode dnsrr (Docker's DNS gives nginx every task; no IPVS routing mesh)")
    check(int(d.get("replicas", 0)) >= 2, "stack.yml: at least 2 replicas")
    uc, rc = d.get("update_config", {}), d.get("rollback_config", {})
    check(uc.get("order") == "start-first" and uc.get("parallelism") == 1 and uc.get("failure_action") == "rollback",
          "stack.yml: update_config start-first, parallelism 1, failure_action rollback", str(uc))
    check(rc.get("parallelism") == 1 and rc.get("order") == "start-first", "stack.yml: rollback_config", str(rc))
    check(d.get("restart_policy", {}).get("condition") in ("any", "on-failure"), "stack.yml: restart_policy")
    lim = d.get("resources", {}).get("limits", {})
    rsv = d.get("resources", {}).get("reservations", {})
    ok = all(k in lim for k in ("cpus", "memory")) and all(k in rsv for k in ("cpus", "memory"))
    check(ok, "stack.yml: CPU and memory limits and reservations")
    if ok:
        ncpu = cpus(lim["cpus"])
        check(0 < cfg["workers"] * cfg["engine_threads"] <= max(1, round(ncpu)) and cfg["http_threads"] > 0,
              "stack.yml: MF_WORKERS x MF_ENGINE_THREADS and MF_HTTP_THREADS set, within the %g CPUs" % ncpu)
        check(cpus(rsv["cpus"]) <= ncpu and memory_bytes(rsv["memory"]) <= memory_bytes(lim["memory"]),
              "stack.yml: reservations <= limits")
    check(duration_ms(svc.get("stop_grace_period", "10s")) > cfg["drain_timeout_ms"],
          "stack.yml: stop_grace_period > drain_timeout_ms (%d)" % cfg["drain_timeout_ms"])
    hc = svc.get("healthcheck", {}).get("test", [])
    check(hc[:1] == ["CMD"] and hc[1:] == image["health_cmd"],
          "stack.yml: mobileformer health check = the image's HEALTHCHECK", str(hc))
    check(svc.get("read_only") is True and svc.get("cap_drop") == ["ALL"],
          "stack.yml: read-only root filesystem, all capabilities dropped")
    check_bind_mount("stack.yml", cfg, svc.get("volumes"))
    nets = doc.get("networks", {})
    check(all(nets.get(n, {}).get("driver") == "overlay" for n in svc.get("networks", []))
          and svc.get("networks") == ngx.get("networks") and svc.get("networks"),
          "stack.yml: mobileformer and nginx share an overlay network")
    # nginx: its config a Swarm config, its port in host mode
    confs = ngx.get("configs", [])
    top = doc.get("configs", {})
    src = [c.get("source") for c in confs if isinstance(c, dict) and c.get("target") == "/etc/nginx/nginx.conf"]
    check(len(src) == 1 and os.path.normpath(os.path.join(DEPLOY, top.get(src[0], {}).get("file", "")))
          == os.path.join(DEPLOY, "nginx.conf"),
          "stack.yml: nginx's /etc/nginx/nginx.conf is a Swarm config of deploy/nginx.conf")
    ports = ngx.get("ports", [])
    check(len(ports) == 1 and isinstance(ports[0], dict) and ports[0].get("mode") == "host",
          "stack.yml: nginx publishes one port in host mode (no routing mesh)", str(ports))
    nginx_port = int(ports[0].get("target", 0)) if ports and isinstance(ports[0], dict) else 0
    ncopies, nenv = nginx_image()
    nhc = ngx.get("healthcheck", {}).get("test", [])
    check(nhc[:1] == ["CMD"] and ncopies.get(nhc[1] if len(nhc) > 1 else "") == "docker/healthcheck.sh"
          and nenv.get("MF_PORT") == str(nginx_port)
          and as_env(ngx.get("environment")).get("HEALTHCHECK_PATH") == "/nginx-health",
          "stack.yml: nginx health check = docker/healthcheck.sh on nginx's own /nginx-health")
    check("/nginx-health" in nginx_directives()[0], "nginx.conf: has location /nginx-health")
    check(ngx.get("deploy", {}).get("restart_policy", {}).get("condition") in ("any", "on-failure"),
          "stack.yml: nginx restart_policy")
    check_nginx(cfg, "mobileformer", port, nginx_port, "stack.yml")
    check_behind_proxy(cfg, "stack.yml")
    return {"env": env, "limits": lim}


def check_same_settings(compose, stack, k8s):
    """The three deployments carry the same service settings and limits."""
    if not (compose and stack and k8s):
        return
    for name, other in (("docker-compose.yml", compose), ("stack.yml", stack)):
        diff = sorted(set(k8s["env"].items()) ^ set(other["env"].items()))
        check(not diff, "%s and deploy/k8s/configmap.yaml: the same MF_* settings" % name,
              "differ: %s" % ", ".join("%s=%s" % kv for kv in diff))
        kl, ol = k8s["limits"], other["limits"]
        check(cpus(kl["cpu"]) == cpus(ol["cpus"]) and memory_bytes(kl["memory"]) == memory_bytes(ol["memory"]),
              "%s and deploy/k8s/deployment.yaml: the same CPU and memory limits" % name,
              "%s vs %s" % (ol, kl))


# ---- Kubernetes ---------------------------------------------------------------

def init_copy(cmd):
    """(source, destination file) of an init container's `cp SRC DEST` or
    `install [-D] [-m MODE] SRC DEST`; None for another command."""
    if cmd[:1] == ["cp"] and len(cmd) == 3:
        src, dest = cmd[1], cmd[2]
        return src, os.path.join(dest, os.path.basename(src)) if dest.endswith("/") else dest
    if cmd[:1] == ["install"]:
        args, rest = cmd[1:], []
        while args:
            a = args.pop(0)
            if a in ("-m", "--mode"):
                args.pop(0) if args else None
            elif a.startswith("-"):
                if a not in ("-D", "-p", "--preserve-timestamps"):
                    return None
            else:
                rest.append(a)
        return tuple(rest) if len(rest) == 2 and "-D" in cmd else None
    return None


def check_model_volume(pod, c, cfg, image, layout):
    """What the container serves is inside a volume mounted read-only; an
    emptyDir is filled by an init container from the image's bundled model,
    laid out as the tree's repository is (the same model names)."""
    kind, path = served(cfg)
    what = "the model repository" if kind == "repository" else "the model"
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    vm = sorted((m for m in c.get("volumeMounts", []) if inside(path, m["mountPath"])),
                key=lambda m: len(os.path.normpath(m["mountPath"])), reverse=True)
    ok = bool(vm) and vm[0].get("readOnly") is True and vm[0]["name"] in vols
    check(ok, "deployment.yaml: %s %s is inside a volume mounted read-only" % (what, path),
          str(c.get("volumeMounts")))
    if not ok:
        return
    vol, target = vm[0]["name"], os.path.normpath(vm[0]["mountPath"])
    fills = []
    for ic in pod.get("initContainers", []):
        mine = [m for m in ic.get("volumeMounts", []) if m["name"] == vol and not m.get("readOnly")]
        copy = init_copy(ic.get("command", []))
        if mine and copy:
            src, dest = copy
            if inside(dest, mine[0]["mountPath"]):   # the same file, as the main container sees it
                fills.append((ic["name"], src, os.path.join(target, os.path.relpath(dest, mine[0]["mountPath"]))))
    if "emptyDir" in vols[vol]:
        check(bool(fills), "deployment.yaml: an init container fills the emptyDir volume %s (cp or install -D)" % vol)
    for name, src, dest in fills:
        from_model = image["copies"].get(src) == BUNDLED_MODEL
        if kind == "repository":
            parts = os.path.relpath(dest, path).split("/")
            ok = (from_model and len(parts) == 3 and parts[0] in layout
                  and re.fullmatch(r"[1-9][0-9]{0,8}", parts[1]) is not None and parts[2] == "model.safetensors")
            check(ok, "deployment.yaml: init container %s lays out the image's bundled model as %s/<version>/"
                  "model.safetensors in MF_MODEL_REPOSITORY, a model of the tree's %s"
                  % (name, parts[0] if parts else "?", TREE_REPOSITORY), "%s -> %s" % (src, dest))
        else:
            check(from_model and dest == path, "deployment.yaml: init container %s copies the image's model to MF_MODEL"
                  % name, "%s -> %s" % (src, dest))
    if kind == "repository" and "emptyDir" in vols[vol]:
        names = {os.path.relpath(d, path).split("/")[0] for _, _, d in fills}
        check(names == set(layout), "deployment.yaml: the init containers lay out the models of the tree's %s (%s)"
              % (TREE_REPOSITORY, ", ".join(sorted(layout))), "they lay out: %s" % ", ".join(sorted(names)))


def check_k8s(settings, image, layout):
    docs = []
    for path in sorted(glob.glob(os.path.join(K8S, "*.yaml"))):
        with open(path) as f:
            try:
                loaded = [d for d in yaml.safe_load_all(f) if d is not None]
            except yaml.YAMLError as e:
                check(False, "%s: valid YAML" % rel(path), str(e))
                continue
        check(all(isinstance(d, dict) and "kind" in d for d in loaded), "%s: valid YAML" % rel(path))
        docs += [(os.path.basename(path), d) for d in loaded]
    kinds = {}
    for name, d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    for k in ("Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"):
        check(len(kinds.get(k, [])) == 1, "deploy/k8s: one %s" % k)
    kust = kinds.get("Kustomization", [{}])[0]
    for r in kust.get("resources", []):
        check(os.path.exists(os.path.join(K8S, r)), "deploy/k8s/kustomization.yaml: %s exists" % r)
    if any(len(kinds.get(k, [])) != 1 for k in ("Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap")):
        return
    dep, svc, hpa, cm = (kinds[k][0] for k in ("Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"))

    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    cs = [c for c in pod["containers"] if c["name"] == "mobileformer"]
    check(len(cs) == 1, "deployment.yaml: container mobileformer")
    if not cs:
        return
    c = cs[0]
    refs = [e["configMapRef"]["name"] for e in c.get("envFrom", []) if "configMapRef" in e]
    check(refs == [cm["metadata"]["name"]], "deployment.yaml: settings from the ConfigMap %s" % cm["metadata"]["name"])
    env = {k: str(v) for k, v in cm.get("data", {}).items()}
    for e in c.get("env", []):
        env[e["name"]] = str(e.get("value", ""))
    settings.check_env("deploy/k8s ConfigMap", env)
    full_env = dict(image["env"])
    full_env.update(env)
    cfg = settings.effective(full_env)

    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    check(list(ports.values()) == [cfg["port"]], "deployment.yaml: containerPort = MF_PORT %d" % cfg["port"],
          str(ports))

    def probe(kind):
        p = c.get(kind, {}).get("httpGet", {})
        port = p.get("port")
        port = ports.get(port, port)
        return p.get("path"), port
    live, ready = probe("livenessProbe"), probe("readinessProbe")
    check(live == ("/v2/health/live", cfg["port"]), "deployment.yaml: liveness GET /v2/health/live", str(live))
    check(ready == ("/v2/health/ready", cfg["port"]), "deployment.yaml: readiness GET /v2/health/ready", str(ready))
    if "startupProbe" in c:
        sp = probe("startupProbe")
        check(sp[0] in PROBES and sp[1] == cfg["port"], "deployment.yaml: startup probe on a health endpoint", str(sp))

    pre = c.get("lifecycle", {}).get("preStop", {})
    cmd = pre.get("exec", {}).get("command", [])
    pause = int(cmd[1]) if cmd[:1] == ["sleep"] and len(cmd) == 2 else pre.get("sleep", {}).get("seconds")
    check(pause is not None and pause > 0, "deployment.yaml: preStop pause", str(pre))
    grace = pod.get("terminationGracePeriodSeconds", 30)
    check(grace * 1000 > (pause or 0) * 1000 + cfg["drain_timeout_ms"],
          "deployment.yaml: terminationGracePeriodSeconds (%d) > preStop (%s s) + drain_timeout_ms (%d)"
          % (grace, pause, cfg["drain_timeout_ms"]))

    r = c.get("resources", {})
    ok = all(k in r.get(w, {}) for w in ("requests", "limits") for k in ("cpu", "memory"))
    check(ok, "deployment.yaml: CPU and memory requests and limits")
    if ok:
        ncpu = cpus(r["limits"]["cpu"])
        check(0 < cfg["workers"] * cfg["engine_threads"] <= max(1, round(ncpu)) and cfg["http_threads"] > 0,
              "ConfigMap: MF_WORKERS x MF_ENGINE_THREADS and MF_HTTP_THREADS set, within the %g CPU limit" % ncpu)
        check(memory_bytes(r["requests"]["memory"]) <= memory_bytes(r["limits"]["memory"])
              and cpus(r["requests"]["cpu"]) <= ncpu, "deployment.yaml: requests <= limits")

    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == image["uid"],
          "deployment.yaml: runs as non-root uid %s (the image's USER)" % image["uid"])
    check(csc.get("readOnlyRootFilesystem") is True and csc.get("allowPrivilegeEscalation") is False,
          "deployment.yaml: read-only root filesystem, no privilege escalation")

    check_model_volume(pod, c, cfg, image, layout)
    check_behind_proxy(cfg, "deploy/k8s ConfigMap")

    sel = svc["spec"]["selector"]
    check(all(labels.get(k) == v for k, v in sel.items()), "service.yaml: selector matches the pods")
    tps = [p["targetPort"] for p in svc["spec"]["ports"]]
    check(all(ports.get(t, t) == cfg["port"] for t in tps), "service.yaml: targetPort is the container port")
    ref = hpa["spec"]["scaleTargetRef"]
    check(ref.get("kind") == "Deployment" and ref.get("name") == dep["metadata"]["name"],
          "hpa.yaml: scales the Deployment")
    metrics = hpa["spec"].get("metrics", [])
    check(any(m.get("resource", {}).get("name") == "cpu" for m in metrics), "hpa.yaml: on CPU")
    check(dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), "deployment.yaml: selector matches")
    return {"env": env, "limits": c.get("resources", {}).get("limits", {})}


# ---- the runtime image's libraries --------------------------------------------

def check_runtime_libs(binaries):
    """Every shared library the binaries load comes from a package of the runtime
    profile of scripts/install-deps.sh, or from one of their dependencies (as
    installed here; Debian 12 on both sides)."""
    with open(os.path.join(REPO, "scripts", "install-deps.sh")) as f:
        m = re.search(r'^runtime_pkgs="([^"]*)"', f.read(), re.M)
    if not check(m is not None, "scripts/install-deps.sh has a runtime profile"):
        return
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Pre-Depends}, ${Depends}\n"],
                         capture_output=True, text=True).stdout
    deps = {}
    for line in out.splitlines():
        pkg, _, d = line.partition("\t")
        deps[pkg] = [re.sub(r"[ (:].*", "", alt.strip()) for dep in d.split(",") for alt in dep.split("|")
                     if alt.strip()]
    closure, todo = set(), m.group(1).split()
    while todo:
        p = todo.pop()
        if p not in closure:
            closure.add(p)
            todo += deps.get(p, [])
    for binary in binaries:
        if not os.access(binary, os.X_OK):
            skip("runtime libraries of %s" % binary, "not built")
            continue
        ldd = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
        libs = re.findall(r"=> (/\S+)", ldd)
        if any(re.search(r"lib(asan|ubsan|tsan)", lib) for lib in libs):
            skip("runtime libraries of %s" % binary, "a sanitizer build")
            continue
        missing = []
        for lib in libs:
            r = subprocess.run(["dpkg", "-S", os.path.realpath(lib)], capture_output=True, text=True)
            if r.returncode != 0:
                r = subprocess.run(["dpkg", "-S", lib], capture_output=True, text=True)
            pkg = r.stdout.split(":")[0] if r.returncode == 0 else "?"
            if pkg not in closure:
                missing.append("%s (%s)" % (os.path.basename(lib), pkg))
        check(not missing, "the runtime profile provides every library %s loads (%d)"
              % (os.path.basename(binary), len(libs)), "not provided: " + ", ".join(missing))


# ---- probes on a running server ----------------------------------------------

def check_probes(url, paths):
    for path in sorted(paths):
        try:
            with urllib.request.urlopen(url + path, timeout=10) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except OSError as e:
            status = str(e)
        check(status == 200, "GET %s answers 200 on the running server" % path, str(status))
    port = re.search(r":(\d+)$", url).group(1)
    r = subprocess.run(["bash", os.path.join(REPO, "docker", "healthcheck.sh")],
                       env=dict(os.environ, MF_PORT=port), capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, "docker/healthcheck.sh passes against the running server",
          r.stdout.strip() + r.stderr.strip())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8080, for the probe paths")
    ap.add_argument("--build-stage-root", metavar="DIR",
                    help="run the Dockerfile's build stage here with DIR (empty) as its filesystem")
    ap.add_argument("--print-compose-env", action="store_true",
                    help="print the mobileformer service's MF_* environment as NAME=VALUE lines")
    args = ap.parse_args()
    if args.print_compose_env:
        with open(os.path.join(DEPLOY, "docker-compose.yml")) as f:
            svc = yaml.safe_load(f)["services"]["mobileformer"]
        env = as_env(svc.get("environment"))
        for m in svc.get("volumes", []):
            if isinstance(m, dict) and m.get("target") and m.get("source"):
                mount = (os.path.normpath(m["target"]),
                         os.path.normpath(os.path.join(DEPLOY, interpolate(m["source"]))))
                env = {k: to_host(v, mount) for k, v in env.items()}
        for k, v in env.items():
            if not re.fullmatch(r"[A-Za-z0-9_./:-]*", v):
                sys.exit("unexpected characters in %s=%s" % (k, v))
            print("%s=%s" % (k, v))
        return
    settings = Settings(args.server)
    default, tested, outputs = makefile_facts()
    image = check_dockerfile(settings, default, tested, outputs)
    if image is None:
        sys.exit(1)
    paths = healthcheck_paths() | PROBES
    layout = check_tree_repository()
    compose = check_compose(settings, image)
    stack = check_stack(settings, image)
    k8s = check_k8s(settings, image, layout)
    check_same_settings(compose, stack, k8s)
    if compose and compose["mount"] and layout and served(compose["cfg"])[0] == "repository":
        check_repository_serves(args.server, compose["image_env"], compose["env"], compose["mount"], layout)
    bindir = os.path.dirname(os.path.abspath(args.server))
    check_runtime_libs([os.path.join(bindir, b) for b in ("mobileformer-server", "mobileformer")])
    if args.build_stage_root:
        run_build_stage(image, args.build_stage_root)
    if args.url:
        check_probes(args.url.rstrip("/"), paths)
    if failures:
        print("%d check(s) failed" % len(failures))
        sys.exit(1)
    print("all deployment checks passed")


if __name__ == "__main__":
    main()
