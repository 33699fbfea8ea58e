"""Groups callgrind self costs per request by what runs them (see ir_groups.sh)."""
import re
import sys

# (group, patterns on the function name); a function counts in the first
# group that matches. Patterns name both suspendware's functions and the
# peers' counterparts (the stackful crate, the harness's panic catch).
GROUPS = [
    ("layers: layer frames, panic boundaries", [r"SyncMiddleware>::call", r"catch_unwind::do_call",
                                                r"common::run_layers", r"CatchPanic", r"stage::SyncOnly"]),
    ("memcpy (moves of requests, responses, futures)", [r"memcpy|memmove"]),
    ("the segment future / stackful's future", [r"fiber_segment", r"stackful::future::stackful",
                                                 r"StackfulFuture", r"ScopeGuard"]),
    ("the fiber: create, switch, tear down", [r"coro::fiber::Fiber", r"corosensei", r"stack_init_trampoline",
                                              r"stackful::generator", r"fiber_enter", r"fiber_switch",
                                              r"^\?\?\?:0x"]),
    ("the fiber's context: hooks, place checks", [r"FiberLocals", r"coro::current"]),
    ("hand-off at get_response", [r"suspend_for_inner", r"handoff::"]),
    ("the async view: its segment future / wait", [r"async_segment", r"middleware::View>::call",
                                                   r"stackful::future::wait"]),
    ("the pipeline's front: handle, response future", [r"pipeline::Pipeline::handle", r"pipeline::ResponseFuture",
                                                       r"drop_in_place<suspendware::pipeline"]),
    ("the stack pool", [r"stack::pool"]),
    ("thread-locals (LocalKey::with)", [r"LocalKey<T>::with"]),
]


def load(path):
    """Self cost per function (recursion suffixes merged) and the total."""
    costs, total = {}, 0
    for line in open(path):
        m = re.match(r"^\s*([\d,]+) \([\s\d.]+%\)\s+(.*?)(?: \[.*\])?$", line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        name = re.sub(r"'\d+", "", m.group(2))
        if name == "PROGRAM TOTALS":
            total = ir
        else:
            costs[name] = costs.get(name, 0) + ir
    return costs, total


def per_request(out, n1, n2, mode):
    a, ta = load(f"{out}/ann.{mode}.{n1}")
    b, tb = load(f"{out}/ann.{mode}.{n2}")
    d = {k: (b.get(k, 0) - a.get(k, 0)) / (n2 - n1) for k in set(a) | set(b)}
    return d, (tb - ta) / (n2 - n1)


def main():
    out, n1, n2, modes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    data = [per_request(out, n1, n2, m) for m in modes]
    print("| group | " + " | ".join(modes) + " |")
    print("|---|" + "---:|" * len(modes))
    rows = {g: [0.0] * len(modes) for g, _ in GROUPS}
    rest = [0.0] * len(modes)
    for i, (d, _) in enumerate(data):
        for name, ir in d.items():
            for g, pats in GROUPS:
                if any(re.search(p, name) for p in pats):
                    rows[g][i] += ir
                    break
            else:
                rest[i] += ir
    for g, _ in GROUPS:
        print(f"| {g} | " + " | ".join(f"{v:,.0f}" for v in rows[g]) + " |")
    print("| everything else (the workload's header work, malloc, tokio, the harness) | "
          + " | ".join(f"{v:,.0f}" for v in rest) + " |")
    print("| **total per request** | " + " | ".join(f"**{t:,.0f}**" for _, t in data) + " |")


main()
