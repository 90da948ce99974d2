/* Structured exceptions for C: per-thread try frames on sigsetjmp/siglongjmp.
 *
 *   MDL_TRY {
 *       ... code that may call mdl_raise(status) ...
 *   } MDL_EXCEPT(filter) {
 *       ... handler; MDL_EXCEPTION_CODE() is the raised status ...
 *   } MDL_END_TRY;
 *
 * filter is evaluated after the jump back to the frame (not before unwinding as
 * in Windows); it may use MDL_EXCEPTION_CODE(). MDL_EXCEPTION_EXECUTE_HANDLER
 * runs the handler; MDL_EXCEPTION_CONTINUE_SEARCH re-raises to the next outer
 * frame; MDL_EXCEPTION_CONTINUE_EXECUTION is not supported (runs the handler).
 * Rules, as for __try: do not return/goto/break out of the try body (it would
 * leave the frame pushed); locals changed in the body and read in the handler
 * must be volatile. A raise with no frame prints the exception and terminates
 * the process with exit status MDL_EXCEPTION_EXIT. */
#pragma once
#include <setjmp.h>
#include <stdint.h>

#define MDL_EXCEPTION_EXECUTE_HANDLER 1
#define MDL_EXCEPTION_CONTINUE_SEARCH 0
#define MDL_EXCEPTION_CONTINUE_EXECUTION (-1)

struct mdl_try_frame {
    sigjmp_buf jb;
    struct mdl_try_frame *prev;
    int32_t code;
};

void mdl_try_push(struct mdl_try_frame *f);
void mdl_try_pop(struct mdl_try_frame *f);
/* Raise an exception with this status: jumps to the innermost frame. */
__attribute__((noreturn)) void mdl_raise(int32_t status);
/* The status of the exception being handled (or last raised) on this thread. */
int32_t mdl_exception_code(void);
/* Try frames active on this thread (tests). */
unsigned mdl_try_depth(void);

#define MDL_TRY                                              \
    do {                                                     \
        _Pragma("GCC diagnostic push")                       \
        _Pragma("GCC diagnostic ignored \"-Wshadow\"")       \
        struct mdl_try_frame mdl_try_f_; /* nested: shadows */ \
        _Pragma("GCC diagnostic pop")                        \
        mdl_try_push(&mdl_try_f_);                           \
        if (sigsetjmp(mdl_try_f_.jb, 1) == 0) {
#define MDL_EXCEPT(filter)                                   \
            mdl_try_pop(&mdl_try_f_);                        \
        } else {                                             \
            if ((filter) == MDL_EXCEPTION_CONTINUE_SEARCH)   \
                mdl_raise(mdl_try_f_.code);
#define MDL_END_TRY                                          \
        }                                                    \
    } while (0)
#define MDL_EXCEPTION_CODE() (mdl_exception_code())
