#!/bin/bash
# e2e: README's first command, scripts/demo.sh, on this build. It must print
# every step and end with DEMO PASSED. Its step 8 prints what
# `mdlmapctl --json watch` (running since before the guest booted) received,
# one JSON object per line: read with python3's json, the events must show
# the demo buffer's MDL_LOCKED, MAPPING_CREATED, MAPPING_REMOVED, MDL_UNLOCKED
# in that order, for the same MDL and mapping handles (the mapping handle the
# one the guest printed, at the guest's address), with consecutive seq and
# nothing dropped.
# usage: demo.sh HOSTD AGENT
. "$(dirname "$0")/lib.sh"
BUILD=$(cd "$(dirname "$HOSTD")/.." && pwd)
MDLMAP_SKIP_SETUP=1 bash "$TOP/scripts/demo.sh" "$BUILD" > "$T/demo.log" 2>&1
rc=$?
sed 's/^/# /' "$T/demo.log" | tail -n 60
check "demo exits 0 (got $rc)" [ "$rc" = 0 ]
check "the host read the guest's pattern through the mapping" log_has "$T/demo.log" 'the host sees the guest.s bytes'
check "the guest saw the host's write" log_has "$T/demo.log" 'GUEST SAW HOST WRITE: "hello from the host"'
check "no mapping left at the end" log_has "$T/demo.log" '^   0 mappings'
check "demo passed" log_has "$T/demo.log" 'DEMO PASSED'

# ---- the event stream (step 8) ----
mapped=$(tr -d '\r' < "$T/demo.log" | grep -m1 -o 'MAPPED handle=.*')
handle=$(sed -n 's/.*handle=\(0x[0-9a-f]*\).*/\1/p' <<< "$mapped")
address=$(sed -n 's/.*address=\(0x[0-9a-f]*\).*/\1/p' <<< "$mapped")
sed -n 's/.*subscribed: \({"watching_from_seq".*\)$/\1/p; s/^   \({"seq".*\)$/\1/p' "$T/demo.log" > "$T/events.jsonl"
note "the guest's mapping: ${handle:-none} at ${address:-none}; $(wc -l < "$T/events.jsonl") watch lines"
if ! command -v python3 > /dev/null; then
  note "SKIP the event checks: no python3"
  finish
fi
# One "PASS what" or "FAIL what" line per check.
python3 - "$T/events.jsonl" "$handle" "$address" > "$T/events.check" 2>&1 <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
guest_handle = int(sys.argv[2], 16) if sys.argv[2] else None
def check(ok, what):
    print(("PASS " if ok else "FAIL ") + what)
try:
    objs = [json.loads(l) for l in lines]
except ValueError as e:
    check(False, "every watch line is a JSON object (%s)" % e)
    sys.exit(0)
check(len(objs) > 1 and "watching_from_seq" in objs[0], "the watch printed its subscription, then %d events" % (len(objs) - 1))
if len(objs) < 2 or "watching_from_seq" not in objs[0]:
    sys.exit(0)
first, ev = objs[0]["watching_from_seq"], objs[1:]
seqs = [e["seq"] for e in ev]
check(seqs == list(range(first, first + len(ev))), "seq runs on by one from %d: %s" % (first, seqs))
check(all(e["dropped"] == 0 for e in ev), "no event dropped")
life = ["MDL_LOCKED", "MAPPING_CREATED", "MAPPING_REMOVED", "MDL_UNLOCKED"]
mine = [e for e in ev if e["vm"] == "demo" and e["type"] in life]
check([e["type"] for e in mine] == life, "the demo VM's buffer: %s" % [e["type"] for e in mine])
if len(mine) != 4:
    sys.exit(0)
mdl = {e["mdl_handle"] for e in mine}
check(len(mdl) == 1 and mdl != {"0x0"}, "one MDL handle in all four: %s" % sorted(mdl))
maps = [int(e["map_handle"], 16) for e in mine[1:3]]
check(maps[0] == maps[1] != 0, "MAPPING_CREATED and MAPPING_REMOVED name the same mapping: %s" % [hex(m) for m in maps])
check(maps[0] == guest_handle, "that mapping is the one the guest printed (%s)" % sys.argv[2])
addrs = [e["guest_address"] for e in mine[1:3]]
check(addrs == [sys.argv[3]] * 2, "at the address the guest printed (%s): %s" % (sys.argv[3], addrs))
check(all(e["page_count"] == 3 for e in mine), "8192 bytes at offset 100: 3 pages in all four")
check(all(e["guest_cid"] == 3 for e in mine), "guest CID 3 in all four")
EOF
while read -r verdict what; do
  case "$verdict" in
    PASS) pass "watch: $what" ;;
    FAIL) fail "watch: $what" ;;
    *) fail "watch: the checker said: $verdict $what" ;;
  esac
done < "$T/events.check"
check "the watch checks ran" grep -q '^PASS' "$T/events.check"
finish
