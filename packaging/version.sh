#!/bin/sh
# version.sh [DESCRIBE]: prints the Debian version of the package (and of
# `fulcrum version`) made from `git describe --tags --always --dirty`
# (or from DESCRIBE when given). Debian revision is always -1.
#
#   v1.2.3                  -> 1.2.3-1
#   v1.2.3-rc1              -> 1.2.3~rc1-1          (sorts before 1.2.3)
#   v1.2.3-4-gabc1234       -> 1.2.3+git4.abc1234-1 (sorts after 1.2.3)
#   v1.2.3-4-gabc1234-dirty -> 1.2.3+git4.abc1234.dirty-1
#   abc1234 (no tag yet)    -> 0.0.0~git<commits>.abc1234-1
#   abc1234-dirty           -> 0.0.0~git<commits>.abc1234.dirty-1
#
# <commits> is `git rev-list --count HEAD`, so that untagged builds of later
# commits sort after earlier ones. Two builds of the same dirty tree get the
# same version: give the later one a higher DEB_VERSION to upgrade onto it.
set -eu
d=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo unknown)}
dirty=
case $d in *-dirty) dirty=.dirty; d=${d%-dirty} ;; esac
# A bare abbreviated hash (no tag yet) may start with a digit too.
if printf '%s\n' "$d" | grep -Eq '^v?[0-9]' && ! printf '%s\n' "$d" | grep -Eq '^[0-9a-f]{7,40}$'; then
	d=${d#v}
	# A describe suffix -N-gHASH: N commits after the tag.
	if printf '%s\n' "$d" | grep -Eq -- '-[0-9]+-g[0-9a-f]+$'; then
		hash=${d##*-g}
		rest=${d%-g*}
		n=${rest##*-}
		tag=${rest%-*}
		post=+git$n.$hash$dirty
	else
		tag=$d
		post=${dirty:++dirty}
	fi
	# A pre-release (v1.2.3-rc1) sorts before the release: ~.
	up=$(printf '%s' "$tag" | sed -e 's/-/~/g')$post
else
	n=$(git rev-list --count HEAD 2>/dev/null || echo 0)
	up=0.0.0~git$n.$(printf '%s' "$d" | tr -c 'A-Za-z0-9.+~\n' '.')$dirty
fi
# Only what Debian allows in an upstream version (no '-': the revision
# follows).
up=$(printf '%s' "$up" | tr -c 'A-Za-z0-9.+~' '.')
printf '%s-1\n' "$up"
