#!/usr/bin/env python3
"""What the guest's pages are now: reads /proc/kpageflags in the guest (through
its qemu-ga socket, as root) for the memory pages that a fetch trace's faults
named between FROM_SECS and TO_SECS into the stay, and prints how many have
each combination of the flags that say what a page is (anonymous, mapped
file, slab, free, ...). The guest's RAM file offset is its physical address
(one RAM block below 4 GiB, as for the 2 GiB desktop guest on q35).

usage: guest-page-flags.py QGA_SOCKET TRACE FROM_SECS [TO_SECS]
e.g. the server's  <run_dir>/vms/<desktop>/<vm>/qemu/qga.sock  and the live
<state_dir>/vms/<desktop>/<vm>/fetch-trace.csv of the stay."""
import base64, gzip, json, socket, sys, time, collections

FLAGS = ["LOCKED","ERROR","REFERENCED","UPTODATE","DIRTY","LRU","ACTIVE","SLAB","WRITEBACK","RECLAIM",
         "BUDDY","MMAP","ANON","SWAPCACHE","SWAPBACKED","COMPOUND_HEAD","COMPOUND_TAIL","HUGE","UNEVICTABLE",
         "HWPOISON","NOPAGE","KSM","THP","OFFLINE","ZERO_PAGE","IDLE","PGTABLE"]
KEEP = {"LRU","SLAB","BUDDY","MMAP","ANON","SWAPBACKED","THP","PGTABLE","OFFLINE","NOPAGE","ZERO_PAGE","COMPOUND_HEAD","COMPOUND_TAIL"}

def pfns(trace, lo, hi):
    op = gzip.open if trace.endswith(".gz") else open
    lines = op(trace, "rt").read().splitlines()
    boot0 = int(lines[0].split("started_boottime_ns=")[1])
    out = []
    for l in lines[2:]:
        f = l.split(",")
        if len(f) != 8 or f[0] != "memory" or f[2] != "fault":
            continue
        t = (int(f[6]) - boot0) / 1e9
        if lo <= t < hi:
            out.append((t, int(f[1])))
    return out

class Agent:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX); self.s.connect(path); self.s.settimeout(60); self.buf = b""
        self.s.sendall(json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": 4242}}).encode() + b"\n")
        while b"\xff" not in self.buf:
            self.buf += self.s.recv(65536)
        self.buf = self.buf.split(b"\xff", 1)[1]
        self.line()
    def line(self):
        while b"\n" not in self.buf:
            self.buf += self.s.recv(1 << 20)
        l, self.buf = self.buf.split(b"\n", 1)
        return json.loads(l)
    def ex(self, cmd, args):
        self.s.sendall(json.dumps({"execute": cmd, "arguments": args}).encode() + b"\n")
        r = self.line()
        if "error" in r: raise SystemExit(f"{cmd}: {r['error']}")
        return r["return"]
    def run(self, script, stdin):
        pid = self.ex("guest-exec", {"path": "/bin/sh", "arg": ["-c", script], "capture-output": True,
                                     "input-data": base64.b64encode(stdin).decode()})["pid"]
        while True:
            st = self.ex("guest-exec-status", {"pid": pid})
            if st.get("exited"):
                return base64.b64decode(st.get("out-data", "")).decode(), base64.b64decode(st.get("err-data", "")).decode()
            time.sleep(0.5)

def main():
    sock, trace, lo = sys.argv[1], sys.argv[2], float(sys.argv[3])
    hi = float(sys.argv[4]) if len(sys.argv) > 4 else 1e12
    faults = pfns(trace, lo, hi)
    pages = sorted({p for _, p in faults})
    script = "while read p; do printf '%s ' $p; dd if=/proc/kpageflags bs=8 skip=$p count=1 2>/dev/null | od -An -tu8; done"
    out, err = Agent(sock).run(script, ("\n".join(map(str, pages)) + "\n").encode())
    combos = collections.Counter()
    for l in out.splitlines():
        parts = l.split()
        if len(parts) != 2: continue
        v = int(parts[1])
        names = [n for i, n in enumerate(FLAGS) if v >> i & 1 and n in KEEP]
        combos[" ".join(names) or "(none)"] += 1
    print(f"{len(faults)} faults on {len(pages)} pages between {lo:.0f} s and {min(hi, 1e9):.0f} s; their flags now:")
    for k, v in combos.most_common():
        print(f"{v:6d}  {k}")
    if err.strip(): print("stderr:", err[:500])

main()
