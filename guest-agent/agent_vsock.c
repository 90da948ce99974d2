#include <stdio.h>
#include "agent.h"
int cmd_echo(int argc, char **argv) { (void)argc; (void)argv; return 2; }
int cmd_listen(int argc, char **argv) { (void)argc; (void)argv; return 2; }
