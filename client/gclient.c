#include "gclient.h"
