// The system libuv, as Debian's libuv1-dev installs it (1.44 on Debian 12).
#include <uv.h>
