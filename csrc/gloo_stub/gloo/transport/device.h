// Stand-in for gloo/transport/device.h: see stub.h.
#pragma once
#include <gloo/stub.h>
