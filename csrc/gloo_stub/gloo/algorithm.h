// Stand-in for gloo/algorithm.h: see stub.h.
#pragma once
#include <gloo/stub.h>
