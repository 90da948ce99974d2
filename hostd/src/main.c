#include "hostd.h"
int main(void) { return 0; }
