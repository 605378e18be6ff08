"""A small synthetic multilingual corpus in SMiLER format, so the demo runs with no downloads.

Seven languages (en, de, fr, it, es, ru in Cyrillic, ko in Hangul), 13 SMiLER relations plus `no_relation`.
Every relation has several templates per language whose wording carries the relation (so a small BERT can learn
it); entity 1 is usually the subject, and some templates put entity 2 first. About 5% of the sentences get a
long continuation so they exceed 128 tokens. Everything is drawn from `random.Random(seed)`.

Template notation (kept tiny so the tables stay readable):
  `{e1}`, `{e2}`         the entity, written with its tags: `<e1>Anna Weber</e1>`.
  `[e1:masc|fem]`        the form that agrees with the gender of a person entity (`[e1:né|née]`).
  `{은:e1}`              a Korean particle after the entity, chosen by its final syllable (은/는, 이/가, 을/를,
                         과/와, 으로/로).
French elision (`de <e1>Étienne` -> `d'<e1>Étienne`) is applied after filling.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import pathlib
import random
import re

from herberta_jax import storage
from herberta_jax.data.example import NEGATIVE_LABEL
from herberta_jax.data.smiler import HEADER, SMILER_LABELS

LANGUAGES = ("en", "de", "fr", "it", "es", "ru", "ko")
TEST_FRACTION = 0.15
LONG_FRACTION = 0.05
_LONG_MIN_TOKENS = 140  # rough tokens (words and punctuation) of a long row; subword tokenizers give more

# Relation -> (kind of entity 1, kind of entity 2).
RELATION_KINDS = {
    "birth-place": ("person", "city"),
    "has-spouse": ("person", "person"),
    "has-child": ("person", "person"),
    "org-has-founder": ("org", "person"),
    "headquarters": ("org", "city"),
    "has-author": ("book", "person"),
    "movie-has-director": ("movie", "person"),
    "has-occupation": ("person", "occupation"),
    "has-population": ("city", "number"),
    "has-edu": ("person", "university"),
    "won-award": ("person", "award"),
    "event-year": ("event", "year"),
    "org-leader": ("org", "person"),
}
assert set(RELATION_KINDS) <= set(SMILER_LABELS)
LABELS = tuple(RELATION_KINDS) + (NEGATIVE_LABEL,)

# ---------------------------------------------------------------------------------------------------------------
# Templates: TEMPLATES[lang][relation] is a list of strings; NO_RELATION[lang] a list of (kind 1, kind 2, string),
# pairs of the same kinds as real relations but with wording that states none of them.

TEMPLATES = {
    "en": {
        "birth-place": ["{e1} was born in {e2}.", "Born in {e2}, {e1} moved abroad as a teenager.",
                        "{e1}, a native of {e2}, spent most of a long career abroad.",
                        "The birthplace of {e1} is {e2}."],
        "has-spouse": ["{e1} married {e2} in a small ceremony.", "{e1} is married to {e2}.",
                       "{e2}, the [e2:husband|wife] of {e1}, attended the premiere."],
        "has-child": ["{e1} is the [e1:father|mother] of {e2}.", "{e2} is the youngest child of {e1}.",
                      "{e1} has a [e2:son|daughter] named {e2}."],
        "org-has-founder": ["{e1} was founded by {e2}.", "{e2} founded {e1} with a small group of friends.",
                            "{e1}, the company started by its founder {e2}, opened its first office downtown."],
        "headquarters": ["{e1} is headquartered in {e2}.", "The headquarters of {e1} are located in {e2}.",
                         "From its head office in {e2}, {e1} runs operations across the continent."],
        "has-author": ["The novel \"{e1}\" was written by {e2}.", "{e2} is the author of {e1}.",
                       "{e1}, a book by {e2}, became a bestseller."],
        "movie-has-director": ["{e1} is a film directed by {e2}.",
                               "{e2} directed the film {e1} on a modest budget.", "The director of {e1} was {e2}."],
        "has-occupation": ["{e1} works as a {e2}.", "{e1} is a {e2} by profession.",
                           "As a {e2}, {e1} spent long hours at work.", "{e1} has worked as a {e2} for many years."],
        "has-population": ["{e1} has a population of {e2}.", "About {e2} people live in {e1}.",
                           "The population of {e1} reached {e2} inhabitants at the last census."],
        "has-edu": ["{e1} studied at {e2}.", "{e1} graduated from {e2} with honours.",
                    "A graduate of {e2}, {e1} later taught there."],
        "won-award": ["{e1} won the {e2}.", "{e1} was awarded the {e2} for outstanding work.",
                      "The {e2} went to {e1} that year."],
        "event-year": ["The {e1} took place in {e2}.", "The first {e1} was held in {e2}.",
                       "In {e2}, the {e1} attracted thousands of visitors."],
        "org-leader": ["{e1} is led by chief executive {e2}.", "{e2} has been the CEO of {e1} since the merger.",
                       "{e1} appointed {e2} as its new chairman."],
    },
    "de": {
        "birth-place": ["{e1} wurde in {e2} geboren.",
                        "In {e2} geboren, zog {e1} schon als [e1:Jugendlicher|Jugendliche] ins Ausland.",
                        "Der Geburtsort von {e1} ist {e2}."],
        "has-spouse": ["{e1} heiratete {e2} in einer kleinen Zeremonie.", "{e1} ist mit {e2} verheiratet.",
                       "{e2}, [e2:der Ehemann|die Ehefrau] von {e1}, besuchte die Premiere."],
        "has-child": ["{e1} ist [e1:der Vater|die Mutter] von {e2}.", "{e2} ist das jüngste Kind von {e1}.",
                      "{e1} hat [e2:einen Sohn|eine Tochter] namens {e2}."],
        "org-has-founder": ["{e1} wurde von {e2} gegründet.", "{e2} gründete {e1} mit einigen Freunden.",
                            "[e2:Gründer|Gründerin] von {e1} ist {e2}."],
        "headquarters": ["{e1} hat seinen Hauptsitz in {e2}.", "Der Firmensitz von {e1} befindet sich in {e2}.",
                         "Von der Zentrale in {e2} aus steuert {e1} Geschäfte auf dem ganzen Kontinent."],
        "has-author": ["Der Roman „{e1}“ wurde von {e2} geschrieben.",
                       "{e2} ist [e2:der Autor|die Autorin] von „{e1}“.",
                       "„{e1}“, ein Buch von {e2}, wurde zum Bestseller."],
        "movie-has-director": ["{e1} ist ein Film unter der Regie von {e2}.",
                               "{e2} drehte den Film {e1} mit kleinem Budget.", "Regie bei {e1} führte {e2}."],
        "has-occupation": ["{e1} arbeitet als {e2}.", "{e1} ist von Beruf {e2}.",
                           "Als {e2} verbrachte {e1} lange Stunden bei der Arbeit."],
        "has-population": ["{e1} hat {e2} Einwohner.", "In {e1} leben etwa {e2} Menschen.",
                           "Rund {e2} Einwohner zählt die Stadt {e1}."],
        "has-edu": ["{e1} studierte an der {e2}.", "{e1} schloss das Studium an der {e2} mit Auszeichnung ab.",
                    "Als [e1:Absolvent|Absolventin] der {e2} lehrte {e1} später dort."],
        "won-award": ["{e1} gewann den {e2}.", "{e1} wurde mit dem {e2} ausgezeichnet.",
                      "Den {e2} erhielt in jenem Jahr {e1}."],
        "event-year": ["Das {e1} fand im Jahr {e2} statt.", "Das erste {e1} wurde {e2} veranstaltet.",
                       "Im Jahr {e2} lockte das {e1} tausende Besucher an."],
        "org-leader": ["{e1} wird von [e2:Vorstandschef|Vorstandschefin] {e2} geleitet.",
                       "{e2} leitet {e1} seit der Fusion.",
                       "{e1} ernannte {e2} [e2:zum neuen Vorsitzenden|zur neuen Vorsitzenden]."],
    },
    "fr": {
        "birth-place": ["{e1} est [e1:né|née] à {e2}.", "{e1} a vu le jour à {e2}.",
                        "[e1:Né|Née] à {e2}, {e1} est [e1:parti|partie] à l'étranger à l'adolescence."],
        "has-spouse": ["{e1} a épousé {e2} lors d'une petite cérémonie.", "{e1} est [e1:marié|mariée] à {e2}.",
                       "{e2}, [e2:l'époux|l'épouse] de {e1}, assistait à la première."],
        "has-child": ["{e1} est [e1:le père|la mère] de {e2}.", "{e2} est le plus jeune enfant de {e1}.",
                      "{e1} a [e2:un fils nommé|une fille nommée] {e2}."],
        "org-has-founder": ["{e1} a été fondée par {e2}.", "{e2} a fondé {e1} avec quelques amis.",
                            "La société {e1} a pour [e2:fondateur|fondatrice] {e2}."],
        "headquarters": ["{e1} a son siège à {e2}.", "Le siège social de {e1} se trouve à {e2}.",
                         "Depuis son siège de {e2}, {e1} gère ses activités sur tout le continent."],
        "has-author": ["Le roman « {e1} » a été écrit par {e2}.",
                       "{e2} est [e2:l'auteur|l'autrice] de « {e1} ».",
                       "« {e1} », un livre de {e2}, est devenu un best-seller."],
        "movie-has-director": ["{e1} est un film réalisé par {e2}.",
                               "{e2} a réalisé le film {e1} avec un petit budget.", "Le réalisateur de {e1} est {e2}."],
        "has-occupation": ["{e1} travaille comme {e2}.", "{e1} est {e2} de profession.",
                           "{e2} de métier, {e1} passait de longues heures au travail."],
        "has-population": ["{e1} compte {e2} habitants.", "Environ {e2} personnes vivent à {e1}.",
                           "La population de {e1} s'élève à {e2} habitants."],
        "has-edu": ["{e1} a étudié à l'{e2}.", "{e1} est [e1:diplômé|diplômée] de l'{e2} avec mention.",
                    "[e1:Ancien étudiant|Ancienne étudiante] de l'{e2}, {e1} y a ensuite enseigné."],
        "won-award": ["{e1} a remporté le {e2}.", "{e1} a reçu le {e2} pour l'ensemble de son œuvre.",
                      "Le {e2} a été décerné cette année-là à {e1}."],
        "event-year": ["Le {e1} a eu lieu en {e2}.", "Le premier {e1} s'est tenu en {e2}.",
                       "En {e2}, le {e1} a attiré des milliers de visiteurs."],
        "org-leader": ["{e1} est dirigée par {e2}.", "{e2} dirige {e1} depuis la fusion.",
                       "{e1} a nommé {e2} à la présidence."],
    },
    "it": {
        "birth-place": ["{e1} è [e1:nato|nata] a {e2}.", "{e1} venne alla luce a {e2}.",
                        "[e1:Nato|Nata] a {e2}, {e1} si trasferì all'estero da adolescente."],
        "has-spouse": ["{e1} ha sposato {e2} con una piccola cerimonia.", "{e1} è [e1:sposato|sposata] con {e2}.",
                       "{e2}, [e2:il marito|la moglie] di {e1}, era presente alla prima."],
        "has-child": ["{e1} è [e1:il padre|la madre] di {e2}.", "{e2} è [e2:il figlio|la figlia] più giovane di {e1}.",
                      "{e1} ha [e2:un figlio|una figlia] di nome {e2}."],
        "org-has-founder": ["{e1} è stata fondata da {e2}.", "{e2} ha fondato {e1} insieme ad alcuni amici.",
                            "[e2:Il fondatore|La fondatrice] di {e1} è {e2}."],
        "headquarters": ["{e1} ha sede a {e2}.", "La sede centrale di {e1} si trova a {e2}.",
                         "Dalla sede di {e2}, {e1} gestisce le attività in tutto il continente."],
        "has-author": ["Il romanzo «{e1}» è stato scritto da {e2}.", "{e2} è [e2:l'autore|l'autrice] di «{e1}».",
                       "«{e1}», un libro di {e2}, è diventato un bestseller."],
        "movie-has-director": ["{e1} è un film diretto da {e2}.",
                               "{e2} ha diretto il film {e1} con un budget modesto.", "Il regista di {e1} è {e2}."],
        "has-occupation": ["{e1} lavora come {e2}.", "{e1} è {e2} di professione.",
                           "{e2} di mestiere, {e1} passava lunghe ore al lavoro."],
        "has-population": ["{e1} ha {e2} abitanti.", "Circa {e2} persone vivono a {e1}.",
                           "La popolazione di {e1} ammonta a {e2} abitanti."],
        "has-edu": ["{e1} ha studiato all'{e2}.", "{e1} si è [e1:laureato|laureata] all'{e2} con lode.",
                    "[e1:Ex studente|Ex studentessa] dell'{e2}, {e1} vi ha poi insegnato."],
        "won-award": ["{e1} ha vinto il {e2}.", "{e1} ha ricevuto il {e2} per il suo lavoro.",
                      "Il {e2} è andato quell'anno a {e1}."],
        "event-year": ["Il {e1} si è svolto nel {e2}.", "Il primo {e1} si tenne nel {e2}.",
                       "Nel {e2} il {e1} ha attirato migliaia di visitatori."],
        "org-leader": ["{e1} è guidata dall'amministratore delegato {e2}.", "{e2} dirige {e1} dalla fusione.",
                       "{e1} ha nominato {e2} [e2:nuovo presidente|nuova presidente]."],
    },
    "es": {
        "birth-place": ["{e1} nació en {e2}.",
                        "[e1:Nacido|Nacida] en {e2}, {e1} se mudó al extranjero en su adolescencia.",
                        "La ciudad natal de {e1} es {e2}."],
        "has-spouse": ["{e1} se casó con {e2} en una pequeña ceremonia.", "{e1} está [e1:casado|casada] con {e2}.",
                       "{e2}, [e2:el esposo|la esposa] de {e1}, asistió al estreno."],
        "has-child": ["{e1} es [e1:el padre|la madre] de {e2}.", "{e2} es [e2:el hijo menor|la hija menor] de {e1}.",
                      "{e1} tiene [e2:un hijo llamado|una hija llamada] {e2}."],
        "org-has-founder": ["{e1} fue fundada por {e2}.", "{e2} fundó {e1} junto con unos amigos.",
                            "[e2:El fundador|La fundadora] de {e1} es {e2}."],
        "headquarters": ["{e1} tiene su sede en {e2}.", "La sede central de {e1} se encuentra en {e2}.",
                         "Desde su sede en {e2}, {e1} dirige operaciones en todo el continente."],
        "has-author": ["La novela «{e1}» fue escrita por {e2}.", "{e2} es [e2:el autor|la autora] de «{e1}».",
                       "«{e1}», un libro de {e2}, se convirtió en un éxito de ventas."],
        "movie-has-director": ["{e1} es una película dirigida por {e2}.",
                               "{e2} dirigió la película {e1} con un presupuesto modesto.",
                               "[e2:El director|La directora] de {e1} es {e2}."],
        "has-occupation": ["{e1} trabaja como {e2}.", "{e1} es {e2} de profesión.",
                           "{e2} de oficio, {e1} pasaba largas horas trabajando."],
        "has-population": ["{e1} tiene {e2} habitantes.", "Unas {e2} personas viven en {e1}.",
                           "La población de {e1} asciende a {e2} habitantes."],
        "has-edu": ["{e1} estudió en la {e2}.", "{e1} se graduó en la {e2} con honores.",
                    "[e1:Antiguo alumno|Antigua alumna] de la {e2}, {e1} enseñó allí más tarde."],
        "won-award": ["{e1} ganó el {e2}.", "{e1} recibió el {e2} por su destacada labor.",
                      "El {e2} fue para {e1} aquel año."],
        "event-year": ["El {e1} se celebró en {e2}.", "El primer {e1} tuvo lugar en {e2}.",
                       "En {e2}, el {e1} atrajo a miles de visitantes."],
        "org-leader": ["{e1} está dirigida por [e2:el consejero delegado|la consejera delegada] {e2}.",
                       "{e2} dirige {e1} desde la fusión.",
                       "{e1} nombró a {e2} [e2:nuevo presidente|nueva presidenta]."],
    },
    # Russian names decline; these templates keep every entity in the nominative (subjects, apposition after
    # "в городе", titles in «»).
    "ru": {
        "birth-place": ["{e1} [e1:родился|родилась] в городе {e2}.",
                        "{e1} [e1:появился|появилась] на свет в городе {e2}.",
                        "[e1:Уроженец|Уроженка] города {e2}, {e1} в юности [e1:уехал|уехала] за границу."],
        "has-spouse": ["{e1} и {e2} поженились в небольшой церкви.", "{e1} и {e2} — супруги.",
                       "{e2} и {e1} прожили в браке много лет."],
        "has-child": ["{e1} [e1:вырастил|вырастила] [e2:сына|дочь] по имени {e2}.",
                      "{e1} [e1:стал отцом|стала матерью] ребёнка по имени {e2}.",
                      "{e2} и [e2:его|её] [e1:отец|мать] {e1} живут в одном доме."],
        "org-has-founder": ["Компанию «{e1}» [e2:основал|основала] {e2}.",
                            "{e2} [e2:основал|основала] компанию «{e1}» вместе с друзьями.",
                            "Основатель компании «{e1}» — {e2}."],
        "headquarters": ["Штаб-квартира компании «{e1}» находится в городе {e2}.",
                         "Компания «{e1}» имеет главный офис в городе {e2}.",
                         "Из главного офиса в городе {e2} компания «{e1}» управляет делами по всему континенту."],
        "has-author": ["Роман «{e1}» [e2:написал|написала] {e2}.", "{e2} — автор романа «{e1}».",
                       "Книга «{e1}», которую [e2:написал|написала] {e2}, стала бестселлером."],
        "movie-has-director": ["Фильм «{e1}» [e2:снял|сняла] режиссёр {e2}.",
                               "{e2} [e2:снял|сняла] фильм «{e1}» на скромный бюджет.",
                               "Режиссёр фильма «{e1}» — {e2}."],
        "has-occupation": ["{e1} по профессии {e2}.", "{e1} — [e1:известный|известная] {e2}.",
                           "{e2} по призванию, {e1} [e1:проводил|проводила] на работе долгие часы."],
        "has-population": ["Население города {e1} составляет {e2} человек.",
                           "В городе {e1} проживает около {e2} человек.",
                           "Около {e2} жителей насчитывает город {e1}."],
        "has-edu": ["{e1} [e1:учился|училась] в {e2}.", "{e1} с отличием [e1:окончил|окончила] {e2}.",
                    "[e1:Выпускник|Выпускница] {e2} {e1} позже [e1:преподавал|преподавала] там."],
        "won-award": ["{e1} [e1:получил|получила] премию «{e2}».",
                      "{e1} [e1:был удостоен|была удостоена] премии «{e2}» за выдающуюся работу.",
                      "Премию «{e2}» в тот год [e1:получил|получила] {e1}."],
        "event-year": ["Фестиваль «{e1}» прошёл в {e2} году.", "Первый фестиваль «{e1}» состоялся в {e2} году.",
                       "В {e2} году фестиваль «{e1}» посетили тысячи зрителей."],
        "org-leader": ["Компанию «{e1}» возглавляет {e2}.", "{e2} руководит компанией «{e1}» с момента слияния.",
                       "Генеральным директором компании «{e1}» [e2:назначен|назначена] {e2}."],
    },
    "ko": {
        "birth-place": ["{e1}{은:e1} {e2}에서 태어났다.", "{e2}에서 태어난 {e1}{은:e1} 10대에 해외로 이주했다.",
                        "{e1}의 출생지는 {e2}이다."],
        "has-spouse": ["{e1}{은:e1} {e2}{과:e2} 결혼했다.", "{e2}{은:e2} {e1}의 배우자이다.",
                       "{e1}{과:e1} {e2}{은:e2} 부부이다."],
        "has-child": ["{e1}{은:e1} {e2}의 [e1:아버지|어머니]이다.", "{e2}{은:e2} {e1}의 막내 자녀이다.",
                      "{e1}{은:e1} [e2:아들|딸] {e2}{을:e2} 키웠다."],
        "org-has-founder": ["{e1}{은:e1} {e2}{이:e2} 설립했다.", "{e2}{은:e2} 친구들과 함께 {e1}{을:e1} 창립했다.",
                            "{e1}의 창업자는 {e2}이다."],
        "headquarters": ["{e1}의 본사는 {e2}에 있다.", "{e1}{은:e1} {e2}에 본사를 두고 있다.",
                         "{e2}에 위치한 본사에서 {e1}{은:e1} 전 세계 사업을 운영한다."],
        "has-author": ["소설 {e1}{은:e1} {e2}{이:e2} 썼다.", "{e2}{은:e2} {e1}의 저자이다.",
                       "{e2}의 책 {e1}{은:e1} 베스트셀러가 되었다."],
        "movie-has-director": ["영화 {e1}{은:e1} {e2}{이:e2} 감독했다.",
                               "{e2} 감독은 적은 예산으로 영화 {e1}{을:e1} 연출했다.", "{e1}의 감독은 {e2}이다."],
        "has-occupation": ["{e1}{은:e1} 직업이 {e2}이다.", "{e1}{은:e1} 오랫동안 {e2}{로:e2} 일했다.",
                           "{e2}인 {e1}{은:e1} 늘 바쁘게 일했다."],
        "has-population": ["{e1}의 인구는 {e2}명이다.", "{e1}에는 약 {e2}명이 살고 있다.",
                           "약 {e2}명의 주민이 {e1}에 거주한다."],
        "has-edu": ["{e1}{은:e1} {e2}에서 공부했다.", "{e1}{은:e1} {e2}{을:e2} 우등으로 졸업했다.",
                    "{e2} 졸업생인 {e1}{은:e1} 훗날 그곳에서 강의했다."],
        "won-award": ["{e1}{은:e1} {e2}{을:e2} 수상했다.", "{e1}{은:e1} 뛰어난 업적으로 {e2}{을:e2} 받았다.",
                      "그해 {e2}{은:e2} {e1}에게 돌아갔다."],
        "event-year": ["{e1}{은:e1} {e2}년에 열렸다.", "제1회 {e1}{은:e1} {e2}년에 개최되었다.",
                       "{e2}년에 열린 {e1}에는 수천 명의 관람객이 찾아왔다."],
        "org-leader": ["{e1}{은:e1} 최고경영자 {e2}{이:e2} 이끌고 있다.",
                       "{e2}{은:e2} 합병 이후 {e1}의 대표이사를 맡고 있다.", "{e1}{은:e1} {e2}{을:e2} 새 회장으로 선임했다."],
    },
}

NO_RELATION = {
    "en": [("person", "city", "{e1} gave a lecture in {e2} last week."),
           ("person", "person", "{e1} met {e2} briefly at a conference."),
           ("org", "city", "{e1} sponsored a concert in {e2}."),
           ("person", "org", "{e1} criticised {e2} in an interview."),
           ("book", "person", "{e2} once said that {e1} was overrated.")],
    "de": [("person", "city", "{e1} hielt letzte Woche einen Vortrag in {e2}."),
           ("person", "person", "{e1} traf {e2} kurz auf einer Konferenz."),
           ("org", "city", "{e1} sponserte ein Konzert in {e2}."),
           ("person", "org", "{e1} kritisierte {e2} in einem Interview."),
           ("book", "person", "{e2} sagte einmal, „{e1}“ werde überschätzt.")],
    "fr": [("person", "city", "{e1} a donné une conférence à {e2} la semaine dernière."),
           ("person", "person", "{e1} a brièvement croisé {e2} lors d'un colloque."),
           ("org", "city", "{e1} a parrainé un concert à {e2}."),
           ("person", "org", "{e1} a critiqué {e2} dans une interview."),
           ("book", "person", "{e2} a dit un jour que « {e1} » était surestimé.")],
    "it": [("person", "city", "{e1} ha tenuto una conferenza a {e2} la settimana scorsa."),
           ("person", "person", "{e1} ha incontrato brevemente {e2} a un convegno."),
           ("org", "city", "{e1} ha sponsorizzato un concerto a {e2}."),
           ("person", "org", "{e1} ha criticato {e2} in un'intervista."),
           ("book", "person", "{e2} una volta disse che «{e1}» era sopravvalutato.")],
    "es": [("person", "city", "{e1} dio una conferencia en {e2} la semana pasada."),
           ("person", "person", "{e1} conoció brevemente a {e2} en un congreso."),
           ("org", "city", "{e1} patrocinó un concierto en {e2}."),
           ("person", "org", "{e1} criticó a {e2} en una entrevista."),
           ("book", "person", "{e2} dijo una vez que «{e1}» estaba sobrevalorada.")],
    "ru": [("person", "city", "{e1} [e1:выступил|выступила] с лекцией в городе {e2}."),
           ("person", "person", "{e1} и {e2} ненадолго встретились на конференции."),
           ("org", "city", "Компания «{e1}» спонсировала концерт в городе {e2}."),
           ("person", "org", "{e1} [e1:раскритиковал|раскритиковала] компанию «{e2}» в интервью."),
           ("book", "person", "{e2} однажды [e2:назвал|назвала] роман «{e1}» переоценённым.")],
    "ko": [("person", "city", "{e1}{은:e1} 지난주 {e2}에서 강연을 했다."),
           ("person", "person", "{e1}{은:e1} 학회에서 {e2}{을:e2} 잠깐 만났다."),
           ("org", "city", "{e1}{은:e1} {e2}에서 열린 콘서트를 후원했다."),
           ("person", "org", "{e1}{은:e1} 인터뷰에서 {e2}{을:e2} 비판했다."),
           ("book", "person", "{e2}{은:e2} {e1}{이:e1} 과대평가되었다고 말한 적이 있다.")],
}

# ---------------------------------------------------------------------------------------------------------------
# Entity fillers.

FIRST_NAMES = {  # lang -> (male names, female names)
    "en": (["James", "Robert", "Daniel", "Thomas", "Michael", "George", "Edward", "Samuel"],
           ["Mary", "Sarah", "Emily", "Laura", "Helen", "Alice", "Grace", "Rachel"]),
    "de": (["Lukas", "Jonas", "Felix", "Matthias", "Stefan", "Klaus", "Jürgen", "Tobias"],
           ["Anna", "Lena", "Sabine", "Katrin", "Ursula", "Greta", "Marie", "Johanna"]),
    "fr": (["Pierre", "Antoine", "Julien", "Étienne", "Louis", "Mathieu", "Olivier", "Henri"],
           ["Camille", "Claire", "Élodie", "Juliette", "Margaux", "Sophie", "Amélie", "Léa"]),
    "it": (["Marco", "Luca", "Giovanni", "Alessandro", "Matteo", "Francesco", "Paolo", "Stefano"],
           ["Giulia", "Chiara", "Francesca", "Sara", "Elena", "Valentina", "Martina", "Alessia"]),
    "es": (["Javier", "Carlos", "Miguel", "Alejandro", "Pablo", "Diego", "Andrés", "Fernando"],
           ["Lucía", "María", "Carmen", "Sofía", "Elena", "Isabel", "Paula", "Marta"]),
    "ru": (["Иван", "Алексей", "Дмитрий", "Сергей", "Николай", "Михаил", "Андрей", "Павел"],
           ["Анна", "Мария", "Ольга", "Елена", "Наталья", "Татьяна", "Ирина", "Екатерина"]),
    "ko": (["민준", "지훈", "도윤", "현우", "예준", "준호", "성민", "태양"],
           ["서연", "하은", "수아", "지민", "서윤", "유진", "다은", "소희"]),
}
SURNAMES = {  # lang -> surnames; Russian ones as (masculine, feminine)
    "en": ["Carter", "Bennett", "Hughes", "Foster", "Morgan", "Walsh", "Reed", "Collins", "Turner", "Hayes"],
    "de": ["Müller", "Schneider", "Fischer", "Weber", "Becker", "Hoffmann", "Schäfer", "Koch", "Richter", "Krüger"],
    "fr": ["Dubois", "Lefèvre", "Moreau", "Laurent", "Girard", "Bonnet", "Mercier", "Rousseau", "Fontaine", "Faure"],
    "it": ["Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino", "Greco"],
    "es": ["García", "Fernández", "López", "Martínez", "Sánchez", "Romero", "Navarro", "Torres", "Vázquez", "Molina"],
    "ru": [("Иванов", "Иванова"), ("Петров", "Петрова"), ("Смирнов", "Смирнова"), ("Кузнецов", "Кузнецова"),
           ("Соколов", "Соколова"), ("Попов", "Попова"), ("Лебедев", "Лебедева"), ("Новиков", "Новикова"),
           ("Морозов", "Морозова"), ("Волков", "Волкова")],
    "ko": ["김", "이", "박", "최", "정", "강", "조", "윤", "장", "임"],
}

_CITY_LANGS = ("en", "de", "fr", "it", "es", "ru", "ko")
CITIES = [
    ("Berlin", "Berlin", "Berlin", "Berlino", "Berlín", "Берлин", "베를린"),
    ("Paris", "Paris", "Paris", "Parigi", "París", "Париж", "파리"),
    ("Rome", "Rom", "Rome", "Roma", "Roma", "Рим", "로마"),
    ("Madrid", "Madrid", "Madrid", "Madrid", "Madrid", "Мадрид", "마드리드"),
    ("Vienna", "Wien", "Vienne", "Vienna", "Viena", "Вена", "빈"),
    ("Munich", "München", "Munich", "Monaco di Baviera", "Múnich", "Мюнхен", "뮌헨"),
    ("Lyon", "Lyon", "Lyon", "Lione", "Lyon", "Лион", "리옹"),
    ("Milan", "Mailand", "Milan", "Milano", "Milán", "Милан", "밀라노"),
    ("Barcelona", "Barcelona", "Barcelone", "Barcellona", "Barcelona", "Барселона", "바르셀로나"),
    ("Moscow", "Moskau", "Moscou", "Mosca", "Moscú", "Москва", "모스크바"),
    ("Seoul", "Seoul", "Séoul", "Seul", "Seúl", "Сеул", "서울"),
    ("Busan", "Busan", "Busan", "Busan", "Busan", "Пусан", "부산"),
    ("Lisbon", "Lissabon", "Lisbonne", "Lisbona", "Lisboa", "Лиссабон", "리스본"),
    ("Prague", "Prag", "Prague", "Praga", "Praga", "Прага", "프라하"),
    ("Hamburg", "Hamburg", "Hambourg", "Amburgo", "Hamburgo", "Гамбург", "함부르크"),
    ("Naples", "Neapel", "Naples", "Napoli", "Nápoles", "Неаполь", "나폴리"),
    ("Seville", "Sevilla", "Séville", "Siviglia", "Sevilla", "Севилья", "세비야"),
    ("Saint Petersburg", "Sankt Petersburg", "Saint-Pétersbourg", "San Pietroburgo", "San Petersburgo",
     "Санкт-Петербург", "상트페테르부르크"),
]

_LATIN_ORGS = ["Nordwind Systems", "Helios Energy", "Aurora Biotech", "Vega Logistics", "Altair Media",
               "Orion Robotics", "Lumen Pharma", "Cobalt Motors", "Silverline Bank", "Meridian Software",
               "Polaris Aerospace", "Atlas Foods"]
ORGS = {lang: _LATIN_ORGS for lang in ("en", "de", "fr", "it", "es")}
ORGS["ru"] = ["Вектор", "Северный ветер", "Гелиос", "Альтаир", "Орион", "Меридиан", "Полярная звезда", "Кобальт"]
ORGS["ko"] = ["한빛전자", "누리소프트", "새별제약", "미래항공", "푸른은행", "동방물산", "가람미디어", "하늘로보틱스"]

BOOKS = {
    "en": ["The Silent Harbor", "A Winter in Lisbon", "The Glass Orchard", "Letters from the North",
           "The Last Cartographer", "Echoes of the Valley", "The Salt Road", "Night Train to Vienna"],
    "de": ["Das stille Haus", "Der gläserne Garten", "Winter in Lissabon", "Die letzte Reise",
           "Briefe aus dem Norden", "Das Salz der Erde", "Der Nachtzug", "Die Kartographin"],
    "fr": ["Le Port silencieux", "Un hiver à Lisbonne", "Le Verger de verre", "Lettres du Nord",
           "Le Dernier Cartographe", "La Route du sel", "Train de nuit", "Les Échos de la vallée"],
    "it": ["Il porto silenzioso", "Un inverno a Lisbona", "Il frutteto di vetro", "Lettere dal Nord",
           "L'ultimo cartografo", "La via del sale", "Treno di notte", "Echi della valle"],
    "es": ["Puerto silencioso", "Un invierno en Lisboa", "Huerto de cristal", "Cartas del norte",
           "Último cartógrafo", "La ruta de la sal", "Tren nocturno", "Ecos del valle"],
    "ru": ["Тихая гавань", "Зима в Лиссабоне", "Стеклянный сад", "Письма с севера", "Последний картограф",
           "Соляной путь", "Ночной поезд", "Эхо долины"],
    "ko": ["고요한 항구", "리스본의 겨울", "유리 정원", "북쪽에서 온 편지", "마지막 지도 제작자", "소금길", "밤기차",
           "계곡의 메아리"],
}
MOVIES = {
    "en": ["Midnight Crossing", "The Iron Meadow", "Blue Horizon", "The Quiet Storm", "Paper Lanterns",
           "Red Desert Road", "The Lighthouse Keeper", "Falling Stars"],
    "de": ["Mitternacht", "Der eiserne Hof", "Blauer Horizont", "Der stille Sturm", "Papierlaternen",
           "Die rote Straße", "Der Leuchtturmwärter", "Fallende Sterne"],
    "fr": ["Minuit", "La Prairie de fer", "Horizon bleu", "La Tempête tranquille", "Lanternes de papier",
           "La Route rouge", "Le Gardien du phare", "Étoiles filantes"],
    "it": ["Mezzanotte", "Il prato di ferro", "Orizzonte blu", "La tempesta quieta", "Lanterne di carta",
           "La strada rossa", "Il guardiano del faro", "Stelle cadenti"],
    "es": ["Medianoche", "Pradera de hierro", "Horizonte azul", "Tormenta tranquila", "Linternas de papel",
           "Camino rojo", "Guardián del faro", "Estrellas fugaces"],
    "ru": ["Полночь", "Железный луг", "Синий горизонт", "Тихая буря", "Бумажные фонари", "Красная дорога",
           "Смотритель маяка", "Падающие звёзды"],
    "ko": ["자정", "철의 들판", "푸른 지평선", "조용한 폭풍", "종이 등불", "붉은 길", "등대지기", "떨어지는 별"],
}
OCCUPATIONS = {  # lang -> (masculine, feminine) forms
    "en": [(w, w) for w in ("painter", "journalist", "composer", "physician", "lawyer", "photographer", "chemist",
                            "novelist", "teacher", "surgeon")],
    "de": [("Maler", "Malerin"), ("Architekt", "Architektin"), ("Journalist", "Journalistin"),
           ("Ingenieur", "Ingenieurin"), ("Komponist", "Komponistin"), ("Arzt", "Ärztin"), ("Anwalt", "Anwältin"),
           ("Fotograf", "Fotografin"), ("Chemiker", "Chemikerin"), ("Schriftsteller", "Schriftstellerin")],
    "fr": [("peintre", "peintre"), ("architecte", "architecte"), ("journaliste", "journaliste"),
           ("ingénieur", "ingénieure"), ("compositeur", "compositrice"), ("médecin", "médecin"),
           ("avocat", "avocate"), ("photographe", "photographe"), ("chimiste", "chimiste"),
           ("romancier", "romancière")],
    "it": [("pittore", "pittrice"), ("architetto", "architetta"), ("giornalista", "giornalista"),
           ("ingegnere", "ingegnera"), ("compositore", "compositrice"), ("medico", "medico"),
           ("avvocato", "avvocata"), ("fotografo", "fotografa"), ("chimico", "chimica"),
           ("romanziere", "romanziera")],
    "es": [("pintor", "pintora"), ("arquitecto", "arquitecta"), ("periodista", "periodista"),
           ("ingeniero", "ingeniera"), ("compositor", "compositora"), ("médico", "médica"),
           ("abogado", "abogada"), ("fotógrafo", "fotógrafa"), ("químico", "química"), ("novelista", "novelista")],
    "ru": [("художник", "художница"), ("архитектор", "архитектор"), ("журналист", "журналистка"),
           ("инженер", "инженер"), ("композитор", "композитор"), ("врач", "врач"), ("юрист", "юрист"),
           ("фотограф", "фотограф"), ("химик", "химик"), ("писатель", "писательница")],
    "ko": [(w, w) for w in ("화가", "건축가", "기자", "엔지니어", "작곡가", "의사", "변호사", "사진작가", "화학자",
                            "소설가")],
}
UNIVERSITIES = {
    "en": ["Oxford University", "Harvard University", "Yale University", "Stanford University",
           "Princeton University", "Cambridge University"],
    "de": ["Universität Heidelberg", "Universität Wien", "Universität Göttingen", "Universität Leipzig",
           "Universität Freiburg", "Universität Tübingen"],
    "fr": ["Université de Strasbourg", "Université de Lyon", "Université de Bordeaux", "Université de Montpellier",
           "Université de Lille", "Université de Grenoble"],
    "it": ["Università di Bologna", "Università di Padova", "Università di Pisa", "Università di Torino",
           "Università di Firenze", "Università di Pavia"],
    "es": ["Universidad de Salamanca", "Universidad de Granada", "Universidad de Sevilla", "Universidad de Valencia",
           "Universidad de Oviedo", "Universidad de Zaragoza"],
    "ru": ["МГУ", "СПбГУ", "МФТИ", "ВШЭ", "МГИМО", "МГТУ"],
    "ko": ["서울대학교", "연세대학교", "고려대학교", "카이스트", "부산대학교", "포항공과대학교"],
}
AWARDS = {
    "en": ["Nobel Prize in Physics", "Pulitzer Prize", "Booker Prize", "Turing Award", "Fields Medal", "Golden Lion"],
    "de": ["Nobelpreis für Physik", "Georg-Büchner-Preis", "Pulitzer-Preis", "Kleist-Preis", "Grimme-Preis",
           "Max-Planck-Preis"],
    "fr": ["prix Goncourt", "prix Nobel de physique", "prix Renaudot", "prix Femina", "prix Pulitzer", "prix Turing"],
    "it": ["premio Strega", "premio Nobel per la fisica", "premio Campiello", "premio Viareggio", "premio Pulitzer",
           "premio Bagutta"],
    "es": ["Premio Cervantes", "Premio Nobel de Física", "Premio Planeta", "Premio Nadal", "Premio Pulitzer",
           "Premio Goya"],
    "ru": ["Большая книга", "Золотая маска", "Ника", "Русский Букер", "Национальный бестселлер", "Золотой орёл"],
    "ko": ["노벨 물리학상", "퓰리처상", "부커상", "튜링상", "필즈상", "황금사자상"],
}
EVENTS = {  # patterns filled with a city name, or (Russian) festival names
    "en": ["{city} Film Festival", "{city} Jazz Festival", "{city} Marathon", "{city} Book Fair",
           "{city} Summer Festival"],
    "de": ["Filmfestival {city}", "Jazzfestival {city}", "Sommerfestival {city}", "Theaterfestival {city}",
           "Literaturfestival {city}"],
    "fr": ["Festival du film de {city}", "Festival de jazz de {city}", "Festival d'été de {city}",
           "Festival de théâtre de {city}", "Festival du livre de {city}"],
    "it": ["Festival del cinema di {city}", "Festival jazz di {city}", "Festival del libro di {city}",
           "Festival estivo di {city}", "Festival del teatro di {city}"],
    "es": ["Festival de Cine de {city}", "Festival de Jazz de {city}", "Festival de Verano de {city}",
           "Festival de Teatro de {city}", "Festival del Libro de {city}"],
    "ru": ["Белые ночи", "Золотая осень", "Кинотавр", "Северное сияние", "Звёзды Байкала", "Весна джаза"],
    "ko": ["{city} 국제영화제", "{city} 재즈 페스티벌", "{city} 마라톤", "{city} 도서전", "{city} 여름 축제"],
}
_THOUSANDS_SEPARATOR = {"en": ",", "de": ".", "fr": " ", "it": ".", "es": ".", "ru": " ", "ko": ","}

# Continuations that make a row long (> 128 tokens): plain sentences about an archive and a book, appended
# after the row's own sentence so the entities stay within the first 128 tokens.
LONG_CONTINUATIONS = {
    "en": [
        "The town archives, which were reorganised after a fire in the old library, still hold many letters from "
        "that period.",
        "Historians who studied those documents later described a busy place full of markets, workshops, small "
        "schools and crowded harbours.",
        "Local newspapers of the time printed long reports about the weather, the price of bread and the arrival "
        "of every ship.",
        "Several of these reports were collected decades afterwards by volunteers who spent their weekends copying "
        "faded pages by hand.",
        "Their work was eventually published in a thick volume that is still consulted by students, journalists "
        "and curious visitors.",
        "The same volume also contains maps, photographs and family records that show how quickly the surrounding "
        "villages grew.",
        "Many readers say that the book feels less like a history and more like a slow walk through crowded "
        "streets.",
        "A second edition, expanded with new interviews and an index of names, appeared after the original "
        "printing sold out.",
    ],
    "de": [
        "Das Stadtarchiv, das nach einem Brand in der alten Bibliothek neu geordnet wurde, bewahrt noch viele "
        "Briefe aus jener Zeit auf.",
        "Historiker, die diese Dokumente später untersuchten, beschrieben einen lebhaften Ort voller Märkte, "
        "Werkstätten, kleiner Schulen und belebter Häfen.",
        "Die Lokalzeitungen jener Jahre druckten lange Berichte über das Wetter, den Brotpreis und die Ankunft "
        "jedes einzelnen Schiffes.",
        "Viele dieser Berichte wurden Jahrzehnte später von Freiwilligen gesammelt, die ihre Wochenenden mit dem "
        "Abschreiben verblasster Seiten verbrachten.",
        "Ihre Arbeit erschien schließlich in einem dicken Band, den Studierende, Journalisten und neugierige "
        "Besucher bis heute gern lesen.",
        "Derselbe Band enthält außerdem Karten, Fotografien und Familienunterlagen, die zeigen, wie schnell die "
        "umliegenden Dörfer wuchsen.",
        "Viele Leser sagen, das Buch wirke weniger wie eine Chronik und eher wie ein langsamer Spaziergang durch "
        "belebte Straßen.",
        "Eine zweite Auflage, ergänzt um neue Interviews und ein Namensregister, erschien, nachdem die erste "
        "Auflage vergriffen war.",
    ],
    "fr": [
        "Les archives de la ville, réorganisées après un incendie dans l'ancienne bibliothèque, conservent encore "
        "de nombreuses lettres de cette époque.",
        "Les historiens qui ont étudié ces documents ont décrit un lieu animé, plein de marchés, d'ateliers, de "
        "petites écoles et de ports encombrés.",
        "Les journaux locaux publiaient alors de longs articles sur le temps, le prix du pain et l'arrivée de "
        "chaque navire.",
        "Plusieurs de ces articles ont été rassemblés des décennies plus tard par des bénévoles qui recopiaient à "
        "la main des pages jaunies.",
        "Leur travail a finalement été publié dans un épais volume que consultent encore des étudiants, des "
        "journalistes et des visiteurs curieux.",
        "Ce même volume contient aussi des cartes, des photographies et des registres familiaux qui montrent la "
        "croissance rapide des villages voisins.",
        "Beaucoup de lecteurs disent que le livre ressemble moins à une chronique qu'à une lente promenade dans "
        "des rues animées.",
        "Une deuxième édition, enrichie de nouveaux entretiens et d'un index des noms, est parue après "
        "l'épuisement du premier tirage.",
    ],
    "it": [
        "L'archivio cittadino, riordinato dopo un incendio nella vecchia biblioteca, conserva ancora molte lettere "
        "di quel periodo.",
        "Gli storici che studiarono quei documenti descrissero un luogo vivace, pieno di mercati, botteghe, "
        "piccole scuole e porti affollati.",
        "I giornali locali dell'epoca pubblicavano lunghi resoconti sul tempo, sul prezzo del pane e sull'arrivo "
        "di ogni nave.",
        "Molti di questi resoconti furono raccolti decenni dopo da volontari che passavano i fine settimana a "
        "ricopiare a mano pagine sbiadite.",
        "Il loro lavoro fu infine pubblicato in un grosso volume che studenti, giornalisti e visitatori curiosi "
        "consultano ancora oggi.",
        "Lo stesso volume contiene anche mappe, fotografie e documenti di famiglia che mostrano quanto in fretta "
        "crebbero i villaggi vicini.",
        "Molti lettori dicono che il libro sembra meno una cronaca e più una lenta passeggiata per strade "
        "affollate.",
        "Una seconda edizione, arricchita da nuove interviste e da un indice dei nomi, uscì dopo che la prima "
        "tiratura andò esaurita.",
    ],
    "es": [
        "El archivo municipal, reorganizado tras un incendio en la antigua biblioteca, todavía guarda muchas "
        "cartas de aquella época.",
        "Los historiadores que estudiaron esos documentos describieron un lugar animado, lleno de mercados, "
        "talleres, pequeñas escuelas y puertos concurridos.",
        "Los periódicos locales de entonces publicaban largas crónicas sobre el tiempo, el precio del pan y la "
        "llegada de cada barco.",
        "Muchas de esas crónicas fueron reunidas décadas después por voluntarios que pasaban los fines de semana "
        "copiando a mano páginas descoloridas.",
        "Su trabajo se publicó finalmente en un grueso volumen que estudiantes, periodistas y visitantes curiosos "
        "todavía consultan.",
        "El mismo volumen contiene además mapas, fotografías y registros familiares que muestran lo rápido que "
        "crecieron los pueblos cercanos.",
        "Muchos lectores dicen que el libro parece menos una crónica y más un lento paseo por calles llenas de "
        "gente.",
        "Una segunda edición, ampliada con nuevas entrevistas y un índice de nombres, apareció cuando se agotó la "
        "primera tirada.",
    ],
    "ru": [
        "Городской архив, который привели в порядок после пожара в старой библиотеке, до сих пор хранит множество "
        "писем того времени.",
        "Историки, изучавшие эти документы, описывали оживлённое место, полное рынков, мастерских, небольших школ "
        "и шумных гаваней.",
        "Местные газеты того времени печатали длинные заметки о погоде, о цене хлеба и о прибытии каждого "
        "корабля.",
        "Многие из этих заметок спустя десятилетия собрали добровольцы, которые по выходным переписывали от руки "
        "выцветшие страницы.",
        "В итоге их работа вышла толстым томом, который до сих пор читают студенты, журналисты и любопытные "
        "путешественники.",
        "В том же томе есть карты, фотографии и семейные записи, показывающие, как быстро росли соседние "
        "деревни.",
        "Многие читатели говорят, что книга похожа не столько на летопись, сколько на неспешную прогулку по "
        "людным улицам.",
        "Второе издание, дополненное новыми интервью и указателем имён, вышло после того, как первый тираж был "
        "распродан.",
    ],
    "ko": [
        "옛 도서관에서 화재가 난 뒤 다시 정리된 시립 기록보관소에는 그 시절의 편지가 아직도 많이 남아 있다.",
        "그 문서들을 연구한 역사가들은 시장과 공방, 작은 학교와 붐비는 항구로 가득한 활기찬 곳이었다고 설명했다.",
        "당시 지역 신문들은 날씨와 빵 가격, 그리고 배가 들어올 때마다 그 소식을 길게 보도했다.",
        "이런 기사들 가운데 상당수는 수십 년 뒤 주말마다 바랜 종이를 손으로 옮겨 적은 자원봉사자들이 모았다.",
        "그들의 작업은 마침내 두꺼운 책으로 출간되었고 학생과 기자, 호기심 많은 방문객들이 지금도 그 책을 찾는다.",
        "같은 책에는 주변 마을들이 얼마나 빠르게 성장했는지 보여 주는 지도와 사진, 가족 기록도 실려 있다.",
        "많은 독자들은 그 책이 연대기라기보다 붐비는 거리를 천천히 걷는 산책처럼 느껴진다고 말한다.",
        "첫 인쇄본이 모두 팔린 뒤 새로운 인터뷰와 인명 색인을 더한 개정판이 나왔다.",
        "도시의 오래된 골목에는 지금도 그 시절의 간판과 돌계단이 곳곳에 남아 있어 많은 사람들이 사진을 찍으러 온다.",
        "해마다 봄이 되면 시청 앞 광장에서는 그 기록을 바탕으로 한 작은 전시회와 강연이 열린다.",
        "전시를 준비하는 사람들은 오래된 사진 속 인물과 건물을 하나하나 확인하며 몇 달 동안 자료를 정리한다.",
        "이 모든 노력 덕분에 젊은 세대도 도시의 지난 역사를 쉽고 친근하게 접할 수 있게 되었다.",
    ],
}

# ---------------------------------------------------------------------------------------------------------------
# The generator.

# Korean particle pairs: (after a final consonant, after a vowel).
_KO_PARTICLES = {"은": ("은", "는"), "이": ("이", "가"), "을": ("을", "를"), "과": ("과", "와"), "로": ("으로", "로")}
_SLOT = re.compile(r"\{(e[12])\}|\{([^{}:]+):(e[12])\}|\[(e[12]):([^|\]]*)\|([^\]]*)\]")
_FRENCH_ELISION = re.compile(r"\b([Dd]e|[Qq]ue) (<e[12]>)(?=[AEIOUÉÈÊaeiouéèê])")
_ROUGH_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclasses.dataclass(frozen=True)
class _Entity:
  text: str
  gender: str = "m"  # "m" or "f"; only persons (and what agrees with them) use it


def _korean_particle(word: str, particle: str) -> str:
  with_final, without_final = _KO_PARTICLES[particle]
  last = word[-1]
  if not "가" <= last <= "힣":  # not a Hangul syllable (digits, Latin): read as ending in a vowel
    return without_final
  final = (ord(last) - ord("가")) % 28
  if particle == "로" and final == 8:  # ㄹ takes 로, not 으로
    return without_final
  return with_final if final else without_final


def _render(template: str, entities: dict[str, _Entity]) -> str:
  def fill(match: re.Match) -> str:
    tagged, particle, particle_of, agree_with, masculine, feminine = match.groups()
    if tagged:
      return f"<{tagged}>{entities[tagged].text}</{tagged}>"
    if particle:
      return _korean_particle(entities[particle_of].text, particle)
    return masculine if entities[agree_with].gender == "m" else feminine
  return _SLOT.sub(fill, template)


def _person(rng: random.Random, lang: str) -> _Entity:
  gender = rng.choice("mf")
  first = rng.choice(FIRST_NAMES[lang][0 if gender == "m" else 1])
  surname = rng.choice(SURNAMES[lang])
  if lang == "ru":
    surname = surname[0 if gender == "m" else 1]
  if lang == "ko":
    return _Entity(surname + first, gender)  # Korean names: surname first, no space
  return _Entity(f"{first} {surname}", gender)


def _city(rng: random.Random, lang: str) -> str:
  return rng.choice(CITIES)[_CITY_LANGS.index(lang)]


def _sample(kind: str, rng: random.Random, lang: str, subject: _Entity | None) -> _Entity:
  """One filler of `kind`; an occupation agrees in gender with `subject` (the person it describes)."""
  if kind == "person":
    return _person(rng, lang)
  if kind == "city":
    return _Entity(_city(rng, lang))
  if kind == "occupation":
    masculine, feminine = rng.choice(OCCUPATIONS[lang])
    return _Entity(feminine if subject is not None and subject.gender == "f" else masculine)
  if kind == "number":
    number = rng.randrange(20, 9000) * 1000
    return _Entity(f"{number:,}".replace(",", _THOUSANDS_SEPARATOR[lang]))
  if kind == "year":
    return _Entity(str(rng.randint(1870, 2020)))
  if kind == "event":
    return _Entity(rng.choice(EVENTS[lang]).format(city=_city(rng, lang)))
  tables = {"org": ORGS, "book": BOOKS, "movie": MOVIES, "university": UNIVERSITIES, "award": AWARDS}
  return _Entity(rng.choice(tables[kind][lang]))


def _long_continuation(rng: random.Random, lang: str, sentence: str) -> str:
  """Sentences appended to `sentence` until the row has at least `_LONG_MIN_TOKENS` rough tokens."""
  pool = list(LONG_CONTINUATIONS[lang])
  rng.shuffle(pool)
  count = len(_ROUGH_TOKEN.findall(sentence))
  chosen = []
  for extra in pool:
    if count >= _LONG_MIN_TOKENS:
      break
    chosen.append(extra)
    count += len(_ROUGH_TOKEN.findall(extra))
  return " ".join(chosen)


def _make_row(rng: random.Random, lang: str, label: str, row_id: str, split: str) -> dict:
  if label == NEGATIVE_LABEL:
    kind_1, kind_2, template = rng.choice(NO_RELATION[lang])
  else:
    kind_1, kind_2 = RELATION_KINDS[label]
    template = rng.choice(TEMPLATES[lang][label])
  e1 = _sample(kind_1, rng, lang, None)
  e2 = _sample(kind_2, rng, lang, e1)
  while e2.text == e1.text:  # two different people in has-spouse and the like
    e2 = _sample(kind_2, rng, lang, e1)
  text = _render(template, {"e1": e1, "e2": e2})
  if lang == "fr":
    text = _FRENCH_ELISION.sub(lambda m: m.group(1)[0] + "'" + m.group(2), text)
  if rng.random() < LONG_FRACTION:
    text = text + " " + _long_continuation(rng, lang, text)
  return {"id": row_id, "entity_1": e1.text, "entity_2": e2.text, "label": label, "text": text, "lang": lang,
          "split": split}


def generate(seed: int = 0, sentences_per_language: int = 700) -> list[dict]:
  """The demo corpus as rows with keys id, entity_1, entity_2, label, text (tagged), lang, split.

  Per language: labels balanced (every relation equally often, `no_relation` twice as often), shuffled;
  `TEST_FRACTION` of the rows (at least one) are "test", the rest "train". Deterministic for a seed.

  Raises:
    ValueError: sentences_per_language < 2 (a language needs a train and a test row).
  """
  if sentences_per_language < 2:
    raise ValueError(f"sentences_per_language={sentences_per_language}: use at least 2 (one train, one test row)")
  rng = random.Random(seed)
  weighted = list(RELATION_KINDS) + [NEGATIVE_LABEL, NEGATIVE_LABEL]
  rows = []
  for lang in LANGUAGES:
    n = sentences_per_language
    labels = (weighted * (n // len(weighted) + 1))[:n]
    rng.shuffle(labels)
    n_test = max(1, round(TEST_FRACTION * n))
    test_rows = set(rng.sample(range(n), n_test))
    for i, label in enumerate(labels):
      rows.append(_make_row(rng, lang, label, f"{lang}-{i + 1:05d}", "test" if i in test_rows else "train"))
  return rows


def write_tsv(rows: list[dict], path: str | pathlib.Path) -> None:
  """Writes rows in the SMiLER TSV layout, quoting as pandas' `to_csv(sep="\\t")` does."""
  text = io.StringIO(newline="")
  writer = csv.writer(text, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
  writer.writerow(HEADER)
  for row in rows:
    writer.writerow([row[column] for column in HEADER])
  storage.write_atomically(storage.path(path), text.getvalue())


def write_demo_corpus(out_dir: str | pathlib.Path, seed: int = 0,
                      sentences_per_language: int = 700) -> list[pathlib.Path]:
  """Writes `{lang}_corpora_train.tsv` and `{lang}_corpora_test.tsv` per language (`out_dir` may be a URL);
  returns their paths, sorted."""
  out_dir = storage.path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  by_file: dict[pathlib.Path, list[dict]] = {}
  for row in generate(seed, sentences_per_language):
    by_file.setdefault(out_dir / f"{row['lang']}_corpora_{row['split']}.tsv", []).append(row)
  for path, rows in by_file.items():
    write_tsv(rows, path)
  return sorted(by_file)
