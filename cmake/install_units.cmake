# cmake/install_units.cmake - runs when installing (install(CODE) in
# CMakeLists.txt): configures the systemd units of deploy/systemd/ with the
# installed daemon's path, known only now since `cmake --install --prefix`
# may change the prefix, and installs them.  file(INSTALL) adds $DESTDIR
# to where they go, never to what they say.
#
# In: OMNI_DEPLOY_SRC (deploy/systemd), OMNI_DEPLOY_OUT (build dir for the
# configured units), OMNI_BINDIR_REL, OMNI_SYSTEM_UNITDIR, OMNI_USER_UNITDIR
# (each relative to the prefix, or absolute), and CMAKE_INSTALL_PREFIX.

function(omni_under_prefix out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

omni_under_prefix(OMNI_BINDIR "${OMNI_BINDIR_REL}")
foreach(kind system user)
  string(TOUPPER "${kind}" _k)
  omni_under_prefix(_dest "${OMNI_${_k}_UNITDIR}")
  configure_file("${OMNI_DEPLOY_SRC}/${kind}/omnipkgd.service.in"
                 "${OMNI_DEPLOY_OUT}/${kind}/omnipkgd.service" @ONLY)
  file(INSTALL DESTINATION "${_dest}" TYPE FILE
       FILES "${OMNI_DEPLOY_OUT}/${kind}/omnipkgd.service"
             "${OMNI_DEPLOY_SRC}/${kind}/omnipkgd.socket")
endforeach()
