// Stand-in for gloo/context.h: see stub.h.
#pragma once
#include <gloo/stub.h>
