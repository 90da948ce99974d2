/* mdlmap-agent: guest-side command-line tool. Dispatches argv[1] to the
 * cmd_* functions of agent.h. Static binary for the test initramfs. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
};

static const struct command commands[] = {
    { "echo", cmd_echo,
      "[--cid 2] [--port 7] [--bytes 1M] [--type stream|seqpacket] [--conns 1] [--msg-size 64K]\n"
      "            [--timeout 30] [--connect-timeout 10] [--progress SECS]\n"
      "            verify an echo service" },
    { "listen", cmd_listen, "[--port 7] [--type stream|seqpacket] [--once | --count K]   echo server" },
    { "bench", cmd_bench,
      "[--transport vsock|serial] [--bytes 16M] [--chunk 64K] [--cid 2] [--port 7] [--dev PATH]\n"
      "            [--runs 1] [--no-verify] [--mark TAG]\n"
      "            echo throughput (one checked run, then unchecked timed runs)" },
    { "map", cmd_map, "...   MDL mapping (see agent_mdl.c)" },
    { "selftest", cmd_selftest, "...   MDL self test" },
    { "daemon", cmd_daemon, "...   MDL daemon" },
    { "mapbench", cmd_mapbench, "[--bytes N]... [--iterations K]   MDL map/unmap vs echo round trips" },
    { "grant", cmd_grant, "--peer CID [--bytes N] [--access read|rw] [--revoke-port P] [--hold S]   grant a buffer" },
    { "copy", cmd_copy, "--granter CID --ref REF [--bytes N] [--write] [--loop N]   grant copy" },
    { "revoke", cmd_revoke, "--ref REF   revoke a grant of this VM" },
    { "pool", cmd_pool, "write|read [--name N] [--bytes N] [--offset K]   a shared pool (ivshmem) in place" },
    { "hold-string", cmd_hold_string,
      "[--secret STR] [--seconds S]   hold STR at a printed virtual address and spin\n"
      "            until the host writes the printed stop byte (introspection tests)" },
};

static void usage(FILE *f)
{
    fprintf(f, "usage: mdlmap-agent COMMAND [options]\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "exit codes (echo/listen/bench): 0 ok, 1 verify failed, 2 usage, 3 refused/reset,\n"
               "  4 timeout, 5 I/O error\n");
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);   /* a reset peer is an error to report, not a death */
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "mdlmap-agent: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
