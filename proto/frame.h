/* Length-prefixed framing of protobuf messages over a byte stream. */
#pragma once
#include <stddef.h>
#include <stdint.h>
