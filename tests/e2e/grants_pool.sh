#!/bin/bash
# e2e: a shared pool between two TCG guests (docs/zero-copy-sharing.md).
# hostd (--sharing on --sharing-pair a,b --sharing-pool ab,a,b,64M,DIR)
# creates the pool file with its header; both QEMUs attach it as an
# ivshmem-plain device. Guest A writes 60 MiB in place (mdlmap-agent pool
# write), guest B reads them in place (pool read): the checksums match, and
# hostd's file holds A's bytes (no copy by anyone). The pool is a sealed
# memfd (QEMU gives it to hostd as guest memory too, and hostd only takes
# memory that cannot shrink); QEMU opens it through hostd's symlink. A pool for a pair that
# --sharing does not allow is refused at start-up.
# usage: grants_pool.sh HOSTD AGENT
. "$(dirname "$0")/lib.sh"

POOL=$T/mdlmap-pool-ab
pool_args=(--qemu-arg -object --qemu-arg "memory-backend-file,id=pool-ab,mem-path=$POOL,size=67108864,share=on"
           --qemu-arg -device --qemu-arg "ivshmem-plain,memdev=pool-ab")

"$HOSTD" --vm "name=a,cid=3,socket=$T/x.sock" --vm "name=b,cid=4,socket=$T/y.sock" \
  --sharing-pool "ab,a,b,64M,$T" > "$T/refused.log" 2>&1
check "a pool without --sharing on is refused at start-up (exit $?)" [ $? != 0 ]
check "and no pool file is left" [ ! -e "$POOL" ]

start_hostd --vm "name=a,cid=3,socket=$T/a.sock" --vm "name=b,cid=4,socket=$T/b.sock" \
  --sharing on --sharing-pair a,b --sharing-pool "ab,a,b,64M,$T" || { fail "hostd with the pool ready"; finish; }
pass "hostd with pool ab (64 MiB, a and b) ready"
check "pool file created, 64 MiB, header MDLPOOL1" \
  bash -c "[ \$(stat -L -c %s '$POOL') = 67108864 ] && [ \"\$(head -c 8 '$POOL')\" = MDLPOOL1 ]"

guest a "${pool_args[@]}" --socket "$T/a.sock" -- sh -c '
  mdlmap-agent pool write --name ab --bytes 60M --seed 5 && mdlmap-agent echo --bytes 64K'
check "guest A wrote 60 MiB into the pool in place" log_has "$T/a.log" '^POOL WRITE name=ab offset=0 bytes=62914560 '
check "A's vsock works with the pool attached (hostd takes the pool as guest memory)" \
  log_has "$T/a.log" '^ECHO OK: type=stream conns=1 bytes=65536'
check "QEMU started its vhost-user device" bash -c "! grep -q 'Error starting vhost' '$T/a.log'"
FNV_A=$(tr -d '\r' < "$T/a.log" | sed -nE 's/^POOL WRITE .* fnv=(0x[0-9a-f]+).*/\1/p')
guest b "${pool_args[@]}" --socket "$T/b.sock" -- sh -c '
  mdlmap-agent pool read --name ab --bytes 60M
  mdlmap-agent pool read --name zz --bytes 4K; echo "other-name=$?"'
FNV_B=$(tr -d '\r' < "$T/b.log" | sed -nE 's/^POOL READ .* fnv=(0x[0-9a-f]+).*/\1/p')
check "guest B read the same 60 MiB in place (A $FNV_A, B $FNV_B)" [ -n "$FNV_A" ] && [ "$FNV_A" = "$FNV_B" ]
check "a pool name that is not attached is not found" log_has "$T/b.log" '^other-name=1'
# the first 16 bytes of A's pattern (agent_util.c pattern_fill, seed 5), in hostd's file after the header page
want=$(python3 -c '
M = (1 << 64) - 1
def mix(x):
    x = (x + 0x9e3779b97f4a7c15) & M
    x = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & M
    x = ((x ^ (x >> 27)) * 0x94d049bb133111eb) & M
    return x ^ (x >> 31)
k = mix(5)
print("".join(mix(k ^ w).to_bytes(8, "little").hex() for w in range(2)))')
got=$(od -An -tx1 -j 4096 -N 16 "$POOL" | tr -d ' \n')
check "hostd's pool file holds A's bytes ($got)" [ "$got" = "$want" ]
check "hostd alive" hostd_alive
stop_hostd
hrc=$?
check "hostd exits 0 on SIGTERM (got $hrc)" [ "$hrc" = 0 ]
check "the pool file is removed with hostd" [ ! -e "$POOL" ]
finish
