/* Emulated per-thread IRQL: the checks Windows makes, no real masking. */
#include "mdlmap.h"

static __thread uint8_t cur_irql = MDL_PASSIVE_LEVEL;

uint8_t mdl_irql_get(void)
{
    return cur_irql;
}

uint8_t mdl_irql_raise(uint8_t new_irql)
{
    uint8_t old = cur_irql;
    if (new_irql < old) {
        mdl_bugcheck(MDL_BUG_IRQL_NOT_GREATER_OR_EQUAL, old, new_irql, 0, 1);
        return old;   /* handler returned: leave the IRQL alone */
    }
    cur_irql = new_irql;
    return old;
}

void mdl_irql_lower(uint8_t new_irql)
{
    if (new_irql > cur_irql) {
        /* p1: target IRQL, p2: current IRQL, p4: 2 = from KeLowerIrql */
        mdl_bugcheck(MDL_BUG_IRQL_NOT_LESS_OR_EQUAL, new_irql, cur_irql, 0, 2);
        return;
    }
    cur_irql = new_irql;
}

bool mdl_irql_check(uint8_t max, uintptr_t what, uintptr_t routine)
{
    if (cur_irql <= max)
        return true;
    /* p1: object (MDL), p2: current IRQL, p3: highest allowed, p4: routine id */
    mdl_bugcheck(MDL_BUG_IRQL_NOT_LESS_OR_EQUAL, what, cur_irql, max, routine);
    return false;
}
