/* Placeholder until the MDL commands land. */
#include <stdio.h>
#include "agent.h"
int cmd_map(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "map: not built yet\n"); return 2; }
int cmd_selftest(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "selftest: not built yet\n"); return 2; }
int cmd_daemon(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "daemon: not built yet\n"); return 2; }
