# CMake toolchain for Windows builds of PrismQ Runner (docs/windows.md):
#   cmake -B build-windows/build -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64.cmake
# Debian's mingw-w64 cross compiler (x86_64-w64-mingw32, gcc-mingw-w64-x86-64), the static libraries
# that scripts/deps-windows.sh builds (PRISMQ_WINDOWS_DEPS), found through their pkg-config files, and
# Wine to run what the build produces (ctest, add_custom_command), through scripts/wine-run.sh.
#
# CMake reads this file again for each try_compile, whose CMAKE_SOURCE_DIR and CMAKE_BINARY_DIR are
# scratch directories: defaults come from this file's own place, and the cache variables below are
# handed on to those projects (CMAKE_TRY_COMPILE_PLATFORM_VARIABLES).

set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(PRISMQ_MINGW_HOST x86_64-w64-mingw32)

set(CMAKE_C_COMPILER ${PRISMQ_MINGW_HOST}-gcc)
set(CMAKE_CXX_COMPILER ${PRISMQ_MINGW_HOST}-g++)
set(CMAKE_RC_COMPILER ${PRISMQ_MINGW_HOST}-windres)

get_filename_component(_prismq_root "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
set(PRISMQ_WINDOWS_DEPS "${_prismq_root}/build-windows/deps"
    CACHE PATH "Prefix of the Windows dependencies built by scripts/deps-windows.sh")
set(PRISMQ_WINEPREFIX "${CMAKE_BINARY_DIR}/wineprefix"
    CACHE PATH "Wine prefix in which the crossing emulator runs Windows programs")
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES PRISMQ_WINDOWS_DEPS PRISMQ_WINEPREFIX)

if(NOT EXISTS "${PRISMQ_WINDOWS_DEPS}/lib/pkgconfig")
  message(FATAL_ERROR "No Windows dependencies in ${PRISMQ_WINDOWS_DEPS}: run scripts/deps-windows.sh "
                      "(or set PRISMQ_WINDOWS_DEPS to the prefix it built)")
endif()

# Libraries and headers: the dependencies' prefix and the mingw-w64 runtime, never the build
# machine's; programs (pkg-config, protoc-c, perl) are the build machine's.
set(CMAKE_FIND_ROOT_PATH "${PRISMQ_WINDOWS_DEPS}" /usr/${PRISMQ_MINGW_HOST})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config reads the prefix's .pc files only. Every library there is static, so pkg-config is
# asked with --static (FindPkgConfig's PKG_CONFIG_ARGN): the flags of pkg_check_modules and its
# IMPORTED_TARGETs then carry each library's own dependencies (Libs.private: ws2_32, crypt32, ...).
set(ENV{PKG_CONFIG_LIBDIR} "${PRISMQ_WINDOWS_DEPS}/lib/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "")
set(PKG_CONFIG_ARGN --static)

# Windows programs run under Wine, in a prefix of the build tree.
set(CMAKE_CROSSCOMPILING_EMULATOR "${_prismq_root}/scripts/wine-run.sh;${PRISMQ_WINEPREFIX}")
