"""Checks exported models against graft's outputs (driven by tests/export.rs).

Usage: check.py MANIFEST.json

The manifest lists exported packages (a directory with model.py, weights.safetensors,
and per case an inputs and an expected-outputs file written by graft) and ONNX files.
Each check prints one line; any failure makes the exit status 1 after all checks ran.
"""

import functools
import importlib.util
import inspect
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

failures = []


def fail(what, message):
    failures.append(f"{what}: {message}")
    print(f"FAIL {what}: {message}", flush=True)


def rel_err(got, want):
    got, want = got.double(), want.double()
    den = want.norm().item()
    num = (got - want).norm().item()
    return num if den == 0 else num / den


def compare(what, got, want, tol):
    if set(got) != set(want):
        fail(what, f"outputs {sorted(got)} != graft's {sorted(want)}")
        return
    for name in want:
        g, w = torch.as_tensor(got[name]), want[name]
        if tuple(g.shape) != tuple(w.shape):
            fail(what, f"`{name}` has shape {tuple(g.shape)}, graft's {tuple(w.shape)}")
            continue
        e = rel_err(g, w)
        if not e <= tol:
            fail(what, f"`{name}` differs from graft's by {e:.3e} (tolerance {tol:.0e})")


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record_constructions(module):
    """Wrap every class of model.py so that each construction records its arguments
    (defaults applied) by the built object's id."""
    calls = {}
    for cls in vars(module).values():
        if not (isinstance(cls, type) and cls.__module__ == module.__name__):
            continue
        original = cls.__init__

        @functools.wraps(original)
        def init(self, *args, _original=original, **kwargs):
            bound = inspect.signature(_original).bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            del arguments["self"]
            calls[id(self)] = arguments
            _original(self, *args, **kwargs)

        cls.__init__ = init
    return calls


def check_constructors(what, model, calls, entry):
    """Each spec module instance is an object of a class whose constructor takes the
    module's parameters by keyword, built with the instance's values; instances
    listed together share one class."""
    if calls.get(id(model)) != {}:
        fail(what, f"Model() takes arguments: {calls.get(id(model))}")
    for path, want in entry["instances"].items():
        m = model.get_submodule(path)
        params = inspect.signature(type(m).__init__).parameters
        kinds = {n: p.kind for n, p in params.items() if n != "self"}
        if any(k != inspect.Parameter.KEYWORD_ONLY for k in kinds.values()):
            fail(what, f"`{path}` ({type(m).__name__}) takes positional arguments")
        got = calls.get(id(m)) or {}
        # A spec name Python reserves (`from`, a helper's name) takes a trailing `_`.
        got = {n[:-1] if n not in want["args"] and n[:-1] in want["args"] else n: v for n, v in got.items()}
        if got != want["args"]:
            fail(what, f"`{path}` ({type(m).__name__}) built with {got}, graft's {want['args']}")
    for paths in entry.get("same_class", []):
        classes = {type(model.get_submodule(p)).__name__ for p in paths}
        if len(classes) != 1:
            fail(what, f"{paths} are of classes {sorted(classes)}, expected one")


def check_package(k, entry):
    t0 = time.perf_counter()
    d = Path(entry["dir"])
    what = f"{entry['spec']} ({entry['mode']})"
    module = load_module(d / "model.py", f"exported_{k}")
    calls = record_constructions(module)
    if entry.get("meta"):
        with torch.device("meta"):
            model = module.Model()
    else:
        model = module.Model()
    check_constructors(what, model, calls, entry)
    # Parameter names, shapes and the trainable set are graft's.
    got = {n: list(p.shape) for n, p in model.named_parameters()}
    want = {p["path"]: p["shape"] for p in entry["params"]}
    if got != want:
        missing = sorted(set(want) - set(got))[:5]
        extra = sorted(set(got) - set(want))[:5]
        fail(what, f"parameters differ: missing {missing}, extra {extra}")
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    want_trainable = sorted(p["path"] for p in entry["params"] if p["trainable"])
    if trainable != want_trainable:
        fail(what, f"trainable {trainable[:5]}… != graft's {want_trainable[:5]}…")
    if entry.get("meta"):
        print(f"ok   {what}: structure", flush=True)
        return
    model.load_state_dict(load_file(d / "weights.safetensors"), strict=True)
    model.eval()
    for case in entry["cases"]:
        inputs = load_file(case["inputs"])
        want = load_file(case["outputs"])
        with torch.no_grad():
            out = model(**inputs)
        compare(f"{what} absent {case['absent']}", out, want, 1e-5)
    if entry.get("compile"):
        inputs = load_file(entry["cases"][0]["inputs"])
        want = load_file(entry["cases"][0]["outputs"])
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        with torch.no_grad():
            compare(f"{what} torch.compile", compiled(**inputs), want, 1e-5)
        program = torch.export.export(model, (), kwargs=inputs)
        with torch.no_grad():
            compare(f"{what} torch.export", program.module()(**inputs), want, 1e-5)
    if entry.get("adamw"):
        check_adamw(what, model, entry["adamw"])
    print(f"ok   {what} ({time.perf_counter() - t0:.1f}s)", flush=True)


def check_adamw(what, model, a):
    """One AdamW step on the exported module equals graft train's step."""
    model.train()
    batch = load_file(a["batch"])
    want = load_file(a["after"])
    # graft decays matrices and kernels only (biases, norm scales, gates are not).
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": a["wd"]},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=a["lr"], betas=(0.9, 0.999), eps=1e-8)
    inputs = {k: v for k, v in batch.items() if k != a["target"]}
    out = model(**inputs)[a["output"]]
    loss = torch.nn.functional.cross_entropy(out, batch[a["target"]].long())
    opt.zero_grad()
    loss.backward()
    opt.step()
    state = dict(model.named_parameters())
    trainable = sorted(n for n, p in state.items() if p.requires_grad)
    if sorted(want) != trainable:
        fail(f"{what} AdamW", f"graft train wrote {sorted(want)[:4]}…, trainable {trainable[:4]}…")
        return
    for name, w in want.items():
        e = rel_err(state[name].detach(), w)
        if not e <= 1e-6:
            fail(f"{what} AdamW", f"`{name}` after one step differs by {e:.3e}")
            return
    print(f"ok   {what}: one AdamW step", flush=True)


def check_onnx(entry):
    import onnx
    import onnxruntime as ort

    path = entry["file"]
    what = f"{entry['spec']} (onnx opset {entry['opset']})"
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as e:  # noqa: BLE001 - any checker error is the failure
        fail(what, f"onnx.checker: {e}")
        return
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for case in entry["cases"]:
        inputs = {k: v.numpy() for k, v in load_file(case["inputs"]).items()}
        want = load_file(case["outputs"])
        outs = sess.run(None, {n: inputs[n] for n in names})
        got = {o.name: torch.from_numpy(v) for o, v in zip(sess.get_outputs(), outs)}
        compare(f"{what} batch {case['batch']}", got, want, 1e-5)
    print(f"ok   {what}", flush=True)


def main():
    manifest = json.loads(Path(sys.argv[1]).read_text())
    packages = manifest["packages"]
    files = [str(Path(e["dir"]) / "model.py") for e in packages]
    ruff = [sys.executable, "-m", "ruff"]
    for args in (["check", "--isolated"], ["format", "--check", "--isolated"]):
        r = subprocess.run(ruff + args + files, capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"ruff {args[0]}", (r.stdout + r.stderr)[-3000:])
    for k, entry in enumerate(packages):
        try:
            check_package(k, entry)
        except Exception as e:  # noqa: BLE001 - report and go on
            fail(f"{entry['spec']} ({entry['mode']})", f"{type(e).__name__}: {e}")
    for entry in manifest.get("onnx", []):
        try:
            check_onnx(entry)
        except Exception as e:  # noqa: BLE001
            fail(f"{entry['spec']} (onnx)", f"{type(e).__name__}: {e}")
    print(f"{len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
