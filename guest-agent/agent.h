/* mdlmap-agent subcommands. agent_main.c dispatches argv[1] to these. */
#pragma once

int cmd_echo(int argc, char **argv);     /* agent_vsock.c */
int cmd_listen(int argc, char **argv);   /* agent_vsock.c */
int cmd_bench(int argc, char **argv);    /* agent_bench.c */
int cmd_map(int argc, char **argv);      /* agent_mdl.c */
int cmd_selftest(int argc, char **argv); /* agent_mdl.c */
int cmd_daemon(int argc, char **argv);   /* agent_mdl.c */
int cmd_mapbench(int argc, char **argv); /* agent_mdl_bench.c */
int cmd_grant(int argc, char **argv);    /* agent_grant.c */
int cmd_copy(int argc, char **argv);     /* agent_grant.c */
int cmd_revoke(int argc, char **argv);   /* agent_grant.c */
int cmd_pool(int argc, char **argv);     /* agent_grant.c */
int cmd_hold_string(int argc, char **argv); /* agent_hold.c */
