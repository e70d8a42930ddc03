#ifndef ESTUARY_CHIREDIS_SHIM_H
#define ESTUARY_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#endif
