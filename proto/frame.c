#include "frame.h"
int mdlmap_frame_placeholder(void);
int mdlmap_frame_placeholder(void) { return 0; }
