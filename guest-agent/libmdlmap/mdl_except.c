/* Per-thread try frames: mdl_raise pops the innermost frame and jumps to it. */
#include "mdl_except.h"

#include <stdio.h>
#include <unistd.h>

#include "mdlmap.h"

static __thread struct mdl_try_frame *top;
static __thread int32_t current_code;

void mdl_try_push(struct mdl_try_frame *f)
{
    f->prev = top;
    f->code = 0;
    top = f;
}

void mdl_try_pop(struct mdl_try_frame *f)
{
    if (top == f)
        top = f->prev;
}

unsigned mdl_try_depth(void)
{
    unsigned n = 0;
    for (struct mdl_try_frame *f = top; f; f = f->prev)
        n++;
    return n;
}

int32_t mdl_exception_code(void)
{
    return current_code;
}

void mdl_raise(int32_t status)
{
    current_code = status;
    struct mdl_try_frame *f = top;
    if (!f) {
        fflush(stdout);
        fprintf(stderr, "*** UNHANDLED EXCEPTION 0x%08X (%s): process terminated\n",
                (uint32_t)status, mdl_status_name(status));
        fflush(stderr);
        _exit(MDL_EXCEPTION_EXIT);
    }
    top = f->prev;   /* the handler runs outside its own frame */
    f->code = status;
    siglongjmp(f->jb, 1);
}
