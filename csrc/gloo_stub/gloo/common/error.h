// Stand-in for gloo/common/error.h: see stub.h.
#pragma once
#include <gloo/stub.h>
