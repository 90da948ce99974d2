/* Placeholder until the MDL engine lands. */
#include "mdl_services.h"
int mdl_services_init(struct hostd *h, const struct mdl_options *o) { (void)h; (void)o; return 0; }
void mdl_services_fini(struct hostd *h) { (void)h; }
void mdl_services_vm_reset(struct hostd *h, struct vm *vm, const char *why) { (void)h; (void)vm; (void)why; }
