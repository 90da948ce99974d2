/* VMA budget for mappings: vm.max_map_count minus what hostd already uses,
 * minus a margin for memory tables, libraries, stacks and growth. */
#pragma once
#include <stdint.h>

uint64_t map_budget_default_vmas(void);
