/* mdlmap-agent subcommands beyond the agreed list in agent.h (vsock/bench side). */
#pragma once

int cmd_bench(int argc, char **argv);   /* agent_bench.c */
