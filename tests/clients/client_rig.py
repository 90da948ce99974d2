"""Test support for host API clients in Python: TAP output and the
clients-guest-mapper helper (a real hostd with harness guests, see
guest_mapper.c), driven line by line."""
import json
import subprocess
import sys


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def check(self, cond, what):
        self.n += 1
        print("%s %d - %s" % ("ok" if cond else "not ok", self.n, what), flush=True)
        if not cond:
            self.failed += 1
        return cond

    def skip(self, what, reason):
        self.n += 1
        print("ok %d - %s # SKIP %s" % (self.n, what, reason), flush=True)

    def diag(self, s):
        print("# " + s, flush=True)

    def done(self):
        print("1..%d" % self.n, flush=True)
        return 1 if self.failed else 0


class Rig:
    """hostd with vm0 (a guest that maps buffers on request) and intro (introspect=on)."""

    def __init__(self, helper, hostd):
        self.p = subprocess.Popen([helper, hostd], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  bufsize=1)
        self.info = self._wait("@ready")

    def _wait(self, tag):
        for line in self.p.stdout:
            line = line.rstrip("\n")
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])
            if line.startswith("@failed"):
                raise RuntimeError("helper: %s failed" % tag)
            print("# helper: " + line, flush=True)
        raise RuntimeError("helper ended before %s (exit %s)" % (tag, self.p.wait()))

    def map(self):
        self.p.stdin.write("map\n")
        return self._wait("@mapped")

    def unmap(self):
        self.p.stdin.write("unmap\n")
        return self._wait("@unmapped")

    def stop(self):
        """Guests go, hostd stops; the helper's exit status (0: hostd exited cleanly)."""
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        for line in self.p.stdout:
            print("# helper: " + line.rstrip("\n"), flush=True)
        return self.p.wait()


def main(run):
    """argv: helper hostd [more...]; run(tap, rig, argv) does the checks."""
    tap = Tap()
    rig = Rig(sys.argv[1], sys.argv[2])
    try:
        run(tap, rig, sys.argv)
    except Exception as e:  # a check that could not even finish is a failure
        tap.check(False, "test body raised %r" % e)
    tap.check(rig.stop() == 0, "helper: guests gone, hostd exited cleanly")
    sys.exit(tap.done())
