// Stand-in for gloo/rendezvous/store.h: see stub.h.
#pragma once
#include <gloo/stub.h>
