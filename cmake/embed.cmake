# Embeds every .py file under a directory into one C table of
# {relative path, bytes, length}, ended by a NULL path (src/runtime.h):
#   cmake -DROOT=dir [-DEXTRA=dir2 -DEXTRA_PREFIX=sub] [-DBINARY=f -DBINARY_PREFIX=sub]
#         -DOUT=f.c -P embed.cmake
# Files under EXTRA are added under EXTRA_PREFIX/ (its last path element kept);
# BINARY (one file of any kind: a built extension) as BINARY_PREFIX/<its name>.
set(arrays "")
set(rows "")
set(i 0)
foreach(pass ROOT EXTRA BINARY)
  if(NOT ${pass})
    continue()
  endif()
  set(dir "${${pass}}")
  set(prefix "")
  if(pass MATCHES "^BINARY$")
    get_filename_component(files "${dir}" NAME)
    get_filename_component(dir "${dir}" DIRECTORY)
    set(prefix "${BINARY_PREFIX}/")
  elseif(pass MATCHES "^EXTRA$")   # MATCHES: the name EXTRA is not dereferenced
    get_filename_component(leaf "${dir}" NAME)
    get_filename_component(dir "${dir}" DIRECTORY)
    set(prefix "${EXTRA_PREFIX}/")
    file(GLOB_RECURSE files RELATIVE "${dir}" "${dir}/${leaf}/*.py")
  else()
    file(GLOB_RECURSE files RELATIVE "${dir}" "${dir}/*.py")
  endif()
  list(FILTER files EXCLUDE REGEX "(^|/)__pycache__/")
  list(SORT files)
  foreach(f IN LISTS files)
    file(READ "${dir}/${f}" hex HEX)
    string(LENGTH "${hex}" n)
    math(EXPR size "${n} / 2")
    string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
    string(APPEND arrays "static const unsigned char f${i}[] = {${body} 0x00};\n")
    string(APPEND rows "\t{ \"${prefix}${f}\", f${i}, ${size} },\n")
    math(EXPR i "${i} + 1")
  endforeach()
endforeach()
file(WRITE "${OUT}" "/* generated from ${ROOT} ${EXTRA} ${BINARY} by cmake/embed.cmake; do not edit */\n"
     "#include \"runtime.h\"\n\n${arrays}\n"
     "const struct runtime_file runtime_files[] = {\n${rows}\t{ NULL, NULL, 0 },\n};\n")
