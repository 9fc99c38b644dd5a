# Read by cpack before it builds a package: refuses a .deb whose files would name a prefix
# other than the one it installs them under.
if(CPACK_GENERATOR STREQUAL "DEB"
   AND NOT CPACK_PASYN_CONFIGURED_PREFIX STREQUAL CPACK_PACKAGING_INSTALL_PREFIX)
  message(FATAL_ERROR "the build was configured with CMAKE_INSTALL_PREFIX="
          "${CPACK_PASYN_CONFIGURED_PREFIX} but the package installs under "
          "${CPACK_PACKAGING_INSTALL_PREFIX}: configure with "
          "-DCMAKE_INSTALL_PREFIX=${CPACK_PACKAGING_INSTALL_PREFIX} (scripts/package.sh does)")
endif()
